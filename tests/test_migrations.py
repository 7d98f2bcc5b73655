"""The control-store schema: numbered migrations applied on open, and an 0.1.0 database upgraded in place."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import threading
from pathlib import Path

from engine import Engine, Settings
from engine.migrations import LATEST, MIGRATIONS
from engine.store import ControlStore, statements

#: A control store written by ezstats 0.1.0 (before migrations): a 2-day demo, its jobs, alerts (one
#: acknowledged), changed thresholds, a quota reset, a registry with a deletion, two dropped partitions.
V010 = Path(__file__).parent / "data" / "ezstats-0.1.0.db"
NOW = dt.datetime(2026, 1, 4, 0, 10, tzinfo=dt.UTC)


def _tables(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT IN ('sqlite_sequence', 'schema_migrations')")]
        return {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}
    finally:
        con.close()


def test_migrations_are_numbered_in_order_and_parse():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    for migration in MIGRATIONS:
        assert list(statements(migration.sql)), migration.name


def test_a_new_store_is_created_at_the_latest_version(tmp_path: Path):
    store = ControlStore(tmp_path / "ezstats.db")
    assert store.version() == LATEST
    assert store.migrate() == []  # nothing left to apply
    with store.connect(write=False) as con:
        applied = [r["version"] for r in con.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert applied == [m.version for m in MIGRATIONS]


def test_an_010_database_upgrades_in_place_keeping_every_row(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(V010, data / "ezstats.db")
    before = _tables(data / "ezstats.db")
    assert sqlite3.connect(data / "ezstats.db").execute("PRAGMA user_version").fetchone()[0] == 0

    engine = Engine(Settings(data_dir=data, scheduler_enabled=False), clock=lambda: NOW)

    assert engine.store.version() == LATEST
    after = _tables(data / "ezstats.db")
    assert {name: after[name] for name in before} == before   # every table and row kept
    # And the engine reads what 0.1.0 wrote.
    alerts = engine.alerts.list_alerts().alerts
    assert len(alerts) == before["alerts"] == 3
    assert any(a.status == "acknowledged" and a.ack_note == "looking" for a in alerts)
    assert engine.alerts.get(alerts[-1].id).events  # with their history
    stored = engine.alerts.read_thresholds()
    assert (stored.version, stored.updated_by) == (2, "test")
    assert [q.key_id for q in engine.quotas.list_all()] == [11, 2301, 7502, 8101, 15101]
    assert engine.quotas.resets(11)
    assert engine.registry.names("masters") == {1: "Acme"}
    assert engine.registry.deleted("providers") == {4}
    assert sorted(engine.cleaner.drops.days()) == [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
    assert {r.job for r in engine.jobs.runs()} >= {"rollups", "daily_stats", "alert_detector", "log_cleaner"}
    # New writes work on the upgraded file.
    engine.quotas.put(12, 100, "daily")
    assert engine.jobs.run("quota_reset").outcome == "ok"
    # Notifications start after the events 0.1.0 recorded: a new channel is never sent the old history.
    engine.notifications.put_channel("late", {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "k"})
    run = engine.notifications.run()
    assert (run.events, run.queued, run.messages) == (0, 0, 0)


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path):
    path = tmp_path / "ezstats.db"
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            ControlStore(path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)
