"""A request_id counts once (SPEC): refused twice within a batch, dropped when re-sent in a later batch, so no
figure counts it twice (issue 10, "Found" 4). Also the request index itself: stable hashes, concurrent
writers, lakes written before it, compaction and retention."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from engine import Engine, Settings
from engine.locks import counted_flock, holds
from engine.request_ids import HashSet, hashes
from engine.request_index import FOLDER
from tests.alert_traffic import NOW, Clock, minutes, requests
from tests.conftest import make_record

NDJSON = {"content-type": "application/x-ndjson"}


def lines(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r, default=str) for r in records).encode()


def glob_count(engine: Engine) -> int:
    """What an analyst's raw glob counts."""
    if not any((engine.settings.data_dir / "log_records").glob("*/*.parquet")):
        return 0
    pattern = str(engine.settings.data_dir / "log_records" / "**" / "*.parquet")
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall()[0][0]


def test_a_request_id_twice_in_one_batch_is_refused_naming_both_rows(client: TestClient, engine: Engine):
    records = [make_record(0), make_record(1), make_record(2), make_record(3, request_id="req-1"),
               make_record(4, request_id="req-0")]
    r = client.post("/v1/logs", content=lines(records), headers=NDJSON)
    assert r.status_code == 422
    assert [(e["row"], e["field"], e["reason"]) for e in r.json()["errors"]] == [
        (4, "request_id", "duplicate of row 2: a request_id counts once"),
        (5, "request_id", "duplicate of row 1: a request_id counts once"),
    ]
    table = pa.Table.from_pylist(records)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    arrow = client.post("/v1/logs", content=sink.getvalue().to_pybytes(),
                        headers={"content-type": "application/vnd.apache.arrow.stream"})
    assert arrow.status_code == 422 and arrow.json()["error_count"] == 2
    assert glob_count(engine) == 0


def test_a_record_resent_in_a_later_batch_is_counted_once_by_every_figure(tmp_path: Path):
    clock = Clock(NOW + minutes(1))
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=clock)
    client = TestClient(engine_app(engine))
    engine.quotas.put(10, 1_000_000, "daily")
    errors = requests(NOW, 4, 30, key_id=10, status=500, quota_cost=7)
    ok = requests(NOW, 4, 30, key_id=10, quota_cost=7)
    first = client.post("/v1/logs", content=lines(errors + ok), headers=NDJSON)
    assert first.json()["records"] == 60 and first.json()["duplicates"] == 0

    def figures() -> dict[str, object]:
        stats = engine.stats.read("today").totals
        return {"stats": (stats.requests, stats.errors, stats.quota_cost),
                "sql": engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py(),
                "glob": glob_count(engine),
                "quota": engine.quotas.usage(clock())[0].used,
                "distinct": engine.sql("SELECT count(DISTINCT request_id) FROM log_records").column(0)[0].as_py()}

    expected = {"stats": (60, 30, 420), "sql": 60, "glob": 60, "quota": 420, "distinct": 60}
    assert figures() == expected
    # A gateway re-sends half of the batch with new records, in another batch (another body, another key).
    again = client.post("/v1/logs", content=lines(errors[:20] + requests(NOW, 1, 5, key_id=11)),
                        headers={**NDJSON, "Idempotency-Key": "retry-1"})
    assert again.status_code == 201 and again.json()["records"] == 5 and again.json()["duplicates"] == 20
    expected = {"stats": (65, 30, 420), "sql": 65, "glob": 65, "quota": 420, "distinct": 65}
    assert figures() == expected  # the live raw part of the stats
    engine.jobs.run("rollups")
    assert figures() == expected  # from the rollups
    opened = engine.alerts.run_once(clock()).opened
    spike = next(a for a in map(engine.alerts.get, opened) if a.type == "error_spike" and a.scope_id == 10)
    assert spike.samples == 60 and spike.value == pytest.approx(0.5)
    # The whole batch again, without a key: nothing new at all.
    replayed = client.post("/v1/logs", content=lines(ok), headers=NDJSON)
    assert replayed.json() == {**replayed.json(), "records": 0, "duplicates": 30, "files": []}
    assert figures() == expected
    clock.now = NOW + dt.timedelta(days=1, hours=1)
    engine.jobs.run("daily_stats")
    daily = engine.stats.read_daily(NOW.date(), NOW.date()).days
    assert [d.requests for d in daily] == [65]


def engine_app(engine: Engine):
    from api.app import create_app

    return create_app(engine=engine)


def test_the_same_request_id_on_another_utc_day_is_another_record(engine: Engine):
    """Documented: a request_id is unique per UTC day of created_at (a re-send carries the same created_at)."""
    engine.ingest_table(pa.Table.from_pylist([make_record(0, created_at="2026-01-01T23:59:59Z")]))
    receipt = engine.ingest_table(pa.Table.from_pylist([make_record(0, created_at="2026-01-02T00:00:01Z")]))
    assert receipt.records == 1 and receipt.duplicates == 0


def test_concurrent_writers_storing_the_same_ids_count_them_once(tmp_path: Path):
    # Two engines over one data dir: two processes' worth of caches, one publish lock.
    engines = [Engine(Settings(data_dir=tmp_path, scheduler_enabled=False)) for _ in range(2)]
    base = dt.datetime(2026, 4, 1, 10, tzinfo=dt.UTC)
    batches = [[make_record(i, created_at=(base + dt.timedelta(seconds=i)).isoformat()) for i in range(k, k + 400)]
               for k in range(0, 2000, 200)]  # each overlaps the next by half
    start = threading.Barrier(len(batches))
    receipts = []

    def write(n: int) -> None:
        start.wait()
        receipts.append(engines[n % 2].ingest_table(pa.Table.from_pylist(batches[n]), f"batch-{n}"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.records for r in receipts) == 2200
    assert sum(r.records + r.duplicates for r in receipts) == 4000
    assert engines[0].sql("SELECT count(*), count(DISTINCT request_id) FROM log_records").to_pylist() == [
        {"count_star()": 2200, "count(DISTINCT request_id)": 2200}]


def test_a_lake_written_before_the_index_is_indexed_before_it_takes_more(engine: Engine):
    engine.ingest_table(pa.Table.from_pylist([make_record(i) for i in range(50)]), "old")
    shutil.rmtree(engine.settings.data_dir / FOLDER)  # as a lake of ezstats 0.1.0 has it
    fresh = Engine(engine.settings)
    receipt = fresh.ingest_table(pa.Table.from_pylist([make_record(i) for i in range(40, 60)]), "new")
    assert (receipt.records, receipt.duplicates) == (10, 10)
    assert glob_count(fresh) == 60


def test_compaction_merges_the_index_and_retention_drops_it(tmp_path: Path):
    now = dt.datetime(2026, 2, 20, 12, tzinfo=dt.UTC)
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False, log_retention_days=2), clock=lambda: now)
    day = dt.date(2026, 2, 10)
    for k in range(5):
        engine.ingest_table(pa.Table.from_pylist([make_record(i, created_at=f"{day}T10:00:{i % 60:02d}Z")
                                                  for i in range(10 * k, 10 * k + 10)]), f"b{k}")
    folder = engine.lake.request_ids.folder(day)
    assert len(list(folder.iterdir())) == 5
    engine.jobs.run("compaction")
    assert len(list(folder.iterdir())) == 1
    receipt = Engine(engine.settings, clock=lambda: now).ingest_table(
        pa.Table.from_pylist([make_record(i, created_at=f"{day}T10:00:{i % 60:02d}Z") for i in range(45, 55)]), "b5")
    assert (receipt.records, receipt.duplicates) == (5, 5)
    engine.jobs.run("daily_stats")
    engine.jobs.run("log_cleaner")
    assert not folder.exists() and not (tmp_path / "log_records" / f"date={day}").exists()


def test_hashes_are_stable_across_versions_and_batches():
    """The index lives on disk: the hash of an id must never change (a change needs a migration of the index)."""
    ids = pa.array(["req-1", "", "chatcmpl-8f3a0c2e-5b1d-4e7a-9c4b-2d6e8f0a1b3c", "模型", "x" * 17])
    got = hashes(ids)
    assert [f"{a:016x}{b:016x}" for a, b in got] == PINNED
    # An id hashes alike whatever the batch: its neighbours' lengths, a slice, a large_string column.
    for i, text in enumerate(ids.to_pylist()):
        assert (hashes(pa.array([text])) == got[i]).all()
        assert (hashes(pa.array(["y" * 40, text]).slice(1)) == got[i]).all()
    assert (hashes(ids.cast(pa.large_string()).cast(pa.string())) == got).all()
    many = pa.array([f"req-{i}" for i in range(200_000)])
    assert len(np.unique(hashes(many)[:, 0])) == 200_000


PINNED = ["47ddb3f9b6575495c8870d7c3fe81170", "9ca066f1a4ab2eeaf2c3d5ff4c6e05c7", "617abfe90826a92fbd887359e4a4deed",
          "601c40f3908a529f1000782f84ac4c70", "261df21c78936cc80bf3c0a218470fad"]


def test_a_hash_set_finds_exactly_its_members():
    rng = np.random.default_rng(7)
    held = HashSet.of(rng.integers(0, 2**63, size=(5000, 2), dtype=np.int64).astype(np.uint64))
    probe_pairs = np.concatenate([np.column_stack([held.firsts[:100], held.seconds[:100]]),
                                  np.column_stack([held.firsts[100:200], held.seconds[100:200] + np.uint64(1)])])
    probe = HashSet.of(probe_pairs)
    found = held.contains(probe)
    assert sorted(probe.rows[found].tolist()) == list(range(100))


def test_a_damaged_index_file_is_rebuilt_from_the_day(engine: Engine):
    """Index files are not fsync-ed: one a crash left short or garbled is detected and the day indexed again."""
    day = dt.date(2026, 1, 1)
    for k in range(2):
        engine.ingest_table(pa.Table.from_pylist([make_record(i) for i in range(10 * k, 10 * k + 10)]), f"b{k}")
    files = sorted(engine.lake.request_ids.folder(day).iterdir())
    files[0].write_bytes(files[0].read_bytes()[:-5])
    data = bytearray(files[1].read_bytes())
    data[-1] ^= 0xFF
    files[1].write_bytes(bytes(data))
    fresh = Engine(engine.settings)
    receipt = fresh.ingest_table(pa.Table.from_pylist([make_record(i) for i in range(15, 25)]), "b2")
    assert (receipt.records, receipt.duplicates) == (5, 5)
    assert glob_count(fresh) == 25


def test_a_writer_lists_a_day_again_only_after_another_held_the_publish_lock(tmp_path: Path, monkeypatch):
    """The listing of a day's index files is kept while the publish lock's hold count says nobody else changed the
    folder: a writer does not list thousands of files per batch, and still sees every other writer's ids."""
    a, b = (Engine(Settings(data_dir=tmp_path, scheduler_enabled=False)) for _ in range(2))
    base = dt.datetime(2026, 4, 1, 10, tzinfo=dt.UTC)
    day_folder = str(a.lake.request_ids.folder(base.date()))
    listings = []
    real = os.listdir

    def counted(path=".", *args):
        if str(path) == day_folder:
            listings.append(path)
        return real(path, *args)

    monkeypatch.setattr(os, "listdir", counted)

    def batch(first: int, count: int) -> pa.Table:
        return pa.Table.from_pylist([make_record(i, created_at=(base + dt.timedelta(seconds=i)).isoformat())
                                     for i in range(first, first + count)])

    a.ingest_table(batch(0, 10), "a0")
    listings.clear()
    for k in range(1, 5):  # only A writes: its own files are added to its listing, their ids to its copy
        assert a.ingest_table(batch(10 * k, 10), f"a{k}").duplicates == 0
    assert a.ingest_table(batch(35, 10), "a-again").duplicates == 10
    assert listings == []
    # B (another process's caches) stores ids overlapping A's last batch, then A ids overlapping B's
    assert (b.ingest_table(batch(45, 10), "b0").duplicates, len(listings) > 0) == (5, True)
    listings.clear()
    assert a.ingest_table(batch(50, 10), "a5").duplicates == 5
    assert listings, "A must list the day again after B's hold"
    # A job holding the lock in A's own process (compaction merges the index files) changes the folder too
    a.jobs.run("compaction")
    assert a.ingest_table(batch(55, 10), "a6").duplicates == 5
    assert a.sql("SELECT count(*), count(DISTINCT request_id) FROM log_records").to_pylist() == [
        {"count_star()": 65, "count(DISTINCT request_id)": 65}]


def test_a_hold_its_process_died_in_is_counted_ended(tmp_path: Path):
    """A writer killed while holding the publish lock leaves its hold count odd: no listing made meanwhile is
    trusted, and the next hold counts the dead one as ended."""
    lock = tmp_path / "publish.lock"
    with counted_flock(lock) as first:
        assert (first, holds(lock)) == (0, 1)
    assert holds(lock) == 2
    code = ("import os, sys; from pathlib import Path; from engine.locks import counted_flock\n"
            "with counted_flock(Path(sys.argv[1])):\n    os.kill(os.getpid(), 9)\n")
    died = subprocess.run([sys.executable, "-c", code, str(lock)], cwd=Path(__file__).resolve().parents[1])
    assert died.returncode == -signal.SIGKILL
    assert holds(lock) == 3  # under way when its process died
    with counted_flock(lock) as after:
        assert after == 4 and holds(lock) == 5
    assert holds(lock) == 6
