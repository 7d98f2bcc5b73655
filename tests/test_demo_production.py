"""`ezstats demo` leaves a lake like production: records stop now, names in the registry, the alerts of
the period stored by the real detector, and running it again (or --follow) adds only what happened since."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import Engine, Settings, demo

NOW = dt.datetime(2026, 3, 10, 15, 37, 12, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def engine(tmp_path):
    return Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=Clock(NOW))


def test_records_stop_now_and_a_later_run_adds_only_the_records_since(engine):
    engine.generate_demo(2, 20_000, 7)
    latest = engine.sql("SELECT max(created_at) AS m, count(*) AS n FROM log_records").to_pylist()[0]
    assert latest["m"] < NOW and latest["m"] > NOW - dt.timedelta(minutes=5)
    today = demo.until(demo.generate_day(NOW.date(), 20_000, 7), NOW).num_rows
    assert latest["n"] == 20_000 + today
    custom = engine.stats.read("custom", NOW.date(), NOW.date()).totals.requests
    assert custom == engine.stats.read("today").totals.requests == today  # today does not grow on its own
    engine.clock.now = NOW + dt.timedelta(minutes=30)   # what `--follow` does every second
    engine.ingest_demo(2, 20_000, 7)
    engine.generate_demo(2, 20_000, 7)                  # and a second run adds nothing more
    ids = engine.sql("SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM log_records").to_pylist()[0]
    later = demo.until(demo.generate_day(NOW.date(), 20_000, 7), engine.clock.now).num_rows
    assert ids == {"n": 20_000 + later, "d": 20_000 + later}


def test_a_past_end_day_gives_whole_days(engine):
    engine.generate_demo(1, 5_000, 7, end_day=dt.date(2026, 3, 1))
    assert engine.sql("SELECT count(*) AS n FROM log_records").to_pylist()[0]["n"] == 5_000


def test_the_registry_names_every_demo_entity(engine):
    engine.generate_demo(1, 5_000, 7)
    for group_by in ("master", "key", "provider", "provider_key"):
        groups = engine.stats.read("today", group_by=group_by).groups
        assert groups and all(g.name for g in groups if g.group is not None), group_by
    assert all(u.key_name for u in engine.quotas.usage(NOW))


@pytest.mark.slow
def test_the_detector_replayed_over_the_demo_stores_the_incidents(engine):
    engine.generate_demo(2, 100_000, 42)   # the default rate: every incident clears its minimum samples
    start = dt.datetime.combine(NOW.date() - dt.timedelta(days=1), dt.time(), dt.UTC)
    engine.alerts.backfill(start, NOW.replace(second=0))
    again = engine.alerts.backfill(start, NOW.replace(second=0))   # replaying twice stores once
    stored = engine.alerts.list_alerts(limit=500).alerts
    assert len(stored) == again.opened
    for day in (NOW.date() - dt.timedelta(days=1), NOW.date()):
        for incident in demo.INCIDENTS:
            begin, _ = incident.window(day)
            if incident.alert_type == "quota_exceeded" or begin + dt.timedelta(minutes=5) > NOW:
                continue   # quotas are judged live; an incident still ahead has not happened
            hits = [a for a in stored if a.type == incident.alert_type and a.scope_id == incident.scope_id
                    and begin <= a.opened_at <= begin + dt.timedelta(minutes=5)]
            assert len(hits) == 1, (incident.name, day)
