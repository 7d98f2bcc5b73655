"""Compaction merges small files; readers never see duplicated or missing rows while it and the cleaner run."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import Engine, Settings
from engine.compaction import Compactor
from engine.lake import write_parquet
from engine.partitions import exchange, list_partitions, retire
from engine.schema import LOG_RECORD_SCHEMA
from engine.tables import LOG_RECORDS
from engine.validation import validate
from tests.conftest import ON_BOTH
from tests.factories import day_records, make_engine, mark_summarized, records

NOW = dt.datetime(2026, 5, 20, 12, 0, tzinfo=dt.UTC)
DAY = NOW.date() - dt.timedelta(days=1)


def _small_batches(engine: Engine, day: dt.date, batches: int, rows: int, seed: int = 0) -> pa.Table:
    tables = [day_records(day, rows, seed=seed * 1000 + i) for i in range(batches)]
    for t in tables:
        engine.ingest_table(t)
    return pa.concat_tables(tables)


def _read_partition(engine: Engine, day: dt.date) -> pa.Table:
    folder = LOG_RECORDS.partition_dir(engine.settings.data_dir, day)
    return pa.concat_tables(pq.ParquetFile(f).read() for f in sorted(folder.glob("*.parquet")))


@ON_BOTH  # also on the PostgreSQL control store
def test_compaction_merges_small_files_and_keeps_every_row(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW, compaction_target_rows=100)
    written = _small_batches(engine, DAY, batches=12, rows=20)
    outcome = engine.compactor.run(NOW)
    part = next(p for p in list_partitions(engine.settings.data_dir / "log_records") if p.day == DAY)
    assert sorted(part.files.values()) == [40, 100, 100]  # 240 rows: groups of >= 100, then the rest
    assert outcome.rows == 240 and outcome.details["partitions"][0]["files_in"] == 12
    merged = _read_partition(engine, DAY)
    assert merged.schema.equals(LOG_RECORD_SCHEMA)
    assert sorted(merged.column("request_id").to_pylist()) == sorted(written.column("request_id").to_pylist())
    assert merged.sort_by("request_id").equals(validate(written).sort_by("request_id"))
    for f in LOG_RECORDS.partition_dir(engine.settings.data_dir, DAY).glob("*.parquet"):
        times = pq.ParquetFile(f).read().column("created_at").to_pylist()
        assert times == sorted(times)  # files stay sorted by created_at, for min/max pruning
    assert engine.sql("SELECT count(*) AS n FROM log_records").column("n")[0].as_py() == 240
    # Nothing small left to merge: a second run changes nothing.
    assert engine.compactor.run(NOW).rows == 0


def test_big_files_are_kept_as_they_are(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW, compaction_target_rows=100)
    engine.ingest_table(day_records(DAY, 80, seed=99))  # >= target/2: not small
    folder = LOG_RECORDS.partition_dir(engine.settings.data_dir, DAY)
    [big] = folder.glob("*.parquet")
    inode = big.stat().st_ino
    _small_batches(engine, DAY, batches=3, rows=5)
    engine.compactor.run(NOW)
    assert (folder / big.name).stat().st_ino == inode
    assert sorted(p.rows for p in list_partitions(engine.settings.data_dir / "log_records")) == [95]
    assert len(list(folder.glob("*.parquet"))) == 2


@ON_BOTH  # also on the PostgreSQL control store
def test_records_that_arrive_during_compaction_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW, compaction_target_rows=1000)
    written = _small_batches(engine, DAY, batches=4, rows=10)
    late = day_records(DAY, 7, seed=1234)
    merge = Compactor._merge

    def merge_then_ingest(self: Compactor, *args: object) -> int:
        files = merge(self, *args)
        engine.ingest_table(late)  # published into the old folder before the swap
        return files

    monkeypatch.setattr(Compactor, "_merge", merge_then_ingest)
    engine.compactor.run(NOW)
    ids = _read_partition(engine, DAY).column("request_id").to_pylist()
    assert sorted(ids) == sorted(written.column("request_id").to_pylist() + late.column("request_id").to_pylist())


def test_a_partition_dropped_meanwhile_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW, compaction_target_rows=1000)
    _small_batches(engine, DAY, batches=3, rows=5)
    mark_summarized(engine, DAY)
    merge = Compactor._merge

    def merge_then_drop(self: Compactor, *args: object) -> int:
        files = merge(self, *args)
        make_engine(tmp_path, NOW, log_max_records=1).cleaner.run(NOW)
        return files

    monkeypatch.setattr(Compactor, "_merge", merge_then_drop)
    outcome = engine.compactor.run(NOW)
    assert outcome.rows == 0 and outcome.details["partitions"][0]["skipped"] == "partition changed meanwhile"
    assert not LOG_RECORDS.partition_dir(engine.settings.data_dir, DAY).exists()
    assert list((tmp_path / "_compaction").iterdir()) == []


def test_dry_run_lists_partitions_and_changes_nothing(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW, compaction_target_rows=100)
    _small_batches(engine, DAY, batches=5, rows=10)
    engine.ingest_table(day_records(DAY - dt.timedelta(days=1), 10))
    dry = engine.jobs.dry_run("compaction")
    assert dry.details["partitions"] == [{"day": str(DAY), "files_in": 5, "files_out": 1, "rows": 50,
                                          "skipped": None}]
    assert len(list(LOG_RECORDS.partition_dir(engine.settings.data_dir, DAY).glob("*.parquet"))) == 5


def _fragment(engine: Engine, day: dt.date, pieces: int) -> None:
    """Test helper: the inverse of compaction (same rows, many small files), swapped in the same way."""
    folder = LOG_RECORDS.partition_dir(engine.settings.data_dir, day)
    table = _read_partition(engine, day)
    build = engine.settings.data_dir / "_compaction" / f"frag.{uuid.uuid4().hex}"
    build.mkdir(parents=True)
    step = -(-table.num_rows // pieces)
    for i in range(pieces):
        write_parquet(table.slice(i * step, step), build / f"frag-{uuid.uuid4().hex}.parquet", 1000)
    with engine.lake.publish_lock():
        exchange(build, folder)
        retire(build, engine.settings.data_dir / "_retired" / "log_records", engine.clock())


@pytest.mark.slow
def test_readers_never_see_duplicated_or_missing_rows(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scheduler_enabled=False, compaction_target_rows=10_000,
                        lake_grace_seconds=30, log_max_records=10_000)
    engine = Engine(settings)  # the real clock: grace periods are real
    today = engine.clock().date()
    days = [today - dt.timedelta(days=k) for k in range(1, 7)]
    expected: dict[dt.date, int] = {}
    for i, day in enumerate(days):
        expected[day] = len(_small_batches(engine, day, batches=8, rows=200 + 17 * i, seed=i))
        mark_summarized(engine, day)
    glob = str((settings.data_dir / "log_records") / "**" / "*.parquet")
    stop = threading.Event()
    results: dict[str, dict[str, int]] = {}
    failures: list[str] = []

    def check(name: str, counts: dict[dt.date, tuple[int, int]]) -> None:
        stats = results.setdefault(name, {"ok": 0, "errors": 0})
        for day, (n, distinct) in counts.items():
            if n != expected[day] or distinct != n:
                failures.append(f"{name}: {day} has {n} rows ({distinct} distinct), expected {expected[day]}")
        if not counts:
            failures.append(f"{name}: no partitions at all")
        stats["ok"] += 1

    def engine_reader() -> None:
        while not stop.is_set():
            rows = engine.sql("SELECT date, count(*) AS n, count(DISTINCT request_id) AS d "
                                        "FROM log_records GROUP BY date").to_pylist()
            check("engine", {r["date"]: (r["n"], r["d"]) for r in rows})

    def duckdb_glob_reader() -> None:
        con = duckdb.connect()
        while not stop.is_set():
            try:
                rows = con.execute(f"SELECT date, count(*), count(DISTINCT request_id) FROM read_parquet('{glob}', "
                                   "hive_partitioning = true, hive_types = {'date': DATE}) GROUP BY date").fetchall()
            except duckdb.IOException:
                results.setdefault("duckdb-glob", {"ok": 0, "errors": 0})["errors"] += 1
                continue
            check("duckdb-glob", {d: (n, x) for d, n, x in rows})

    def polars_glob_reader() -> None:
        while not stop.is_set():
            try:
                frame = (pl.scan_parquet(glob, hive_partitioning=True).group_by("date")
                         .agg(pl.len().alias("n"), pl.col("request_id").n_unique().alias("d")).collect())
            except (FileNotFoundError, pl.exceptions.ComputeError, OSError):
                results.setdefault("polars-glob", {"ok": 0, "errors": 0})["errors"] += 1
                continue
            check("polars-glob", {dt.date.fromisoformat(str(r["date"])): (r["n"], r["d"])
                                  for r in frame.iter_rows(named=True)})

    readers = [threading.Thread(target=f) for f in (engine_reader, duckdb_glob_reader, polars_glob_reader)]
    for t in readers:
        t.start()
    try:
        deadline = time.monotonic() + 6
        rounds = 0
        while time.monotonic() < deadline or rounds < 4:
            engine.compactor.run(engine.clock())
            for day in days[:4]:
                if LOG_RECORDS.partition_dir(settings.data_dir, day).exists():
                    _fragment(engine, day, pieces=6)
            rounds += 1
            if rounds == 2:
                # The cleaner drops the oldest days (over 10,000 records) while the readers run.
                engine.cleaner.run(engine.clock())
        engine.compactor.run(engine.clock())
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert failures == [], failures[:5]
    assert results["engine"]["errors"] == 0 and results["engine"]["ok"] > 5
    assert results["duckdb-glob"]["ok"] > 5 and results["polars-glob"]["ok"] > 5
    present = {p.day: p.rows for p in list_partitions(settings.data_dir / "log_records")}
    assert present == {d: n for d, n in expected.items() if d in present}
    assert sum(present.values()) <= 10_000 < sum(expected.values())
    print(f"rounds={rounds} readers={results}")  # shows how often glob readers hit a swap


def test_compaction_needs_no_symlinks(tmp_path: Path) -> None:
    # Partition folders stay real folders: a DuckDB `**` glob does not follow directory symlinks.
    engine = make_engine(tmp_path, NOW, compaction_target_rows=100)
    _small_batches(engine, DAY, batches=3, rows=5)
    engine.ingest_table(records([NOW]))
    engine.compactor.run(NOW)
    for path in (engine.settings.data_dir / "log_records").iterdir():
        assert path.is_dir() and not path.is_symlink()
    assert os.listdir(tmp_path / "_compaction") == []


def test_without_an_atomic_swap_compaction_fails_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW, compaction_target_rows=100)
    _small_batches(engine, DAY, batches=3, rows=5)
    folder = LOG_RECORDS.partition_dir(engine.settings.data_dir, DAY)
    before = sorted(os.listdir(folder))

    def unsupported(a: Path, b: Path) -> None:
        raise OSError(22, "RENAME_EXCHANGE not supported by this file system")

    monkeypatch.setattr("engine.compaction.exchange", unsupported)
    run = engine.jobs.run("compaction")
    assert run.outcome == "failed" and "RENAME_EXCHANGE" in run.error
    assert sorted(os.listdir(folder)) == before
    assert os.listdir(tmp_path / "_compaction") == []


def test_merged_files_are_merged_again_only_four_of_a_size_at_a_time(tmp_path: Path) -> None:
    # A run rewrites what arrived since the last one, not the whole growing partition.
    engine = make_engine(tmp_path, NOW, compaction_target_rows=1000)
    folder = LOG_RECORDS.partition_dir(engine.settings.data_dir, DAY)
    written = []
    for run in range(4):
        kept = {f.name: f.stat().st_ino for f in folder.glob("*.parquet")} if folder.exists() else {}
        written.append(_small_batches(engine, DAY, batches=3, rows=10, seed=run))
        outcome = engine.compactor.run(NOW)
        assert outcome.details["partitions"][0]["files_in"] == 3  # the batches' files only
        assert {n: (folder / n).stat().st_ino for n in kept} == kept  # earlier merged files untouched
        assert len(list(folder.glob("*.parquet"))) == run + 1
    written.append(_small_batches(engine, DAY, batches=3, rows=10, seed=9))
    outcome = engine.compactor.run(NOW)  # four merged files of one size: merged with the new ones
    assert outcome.details["partitions"][0]["files_in"] == 7 and outcome.rows == 150
    assert [p.rows for p in list_partitions(engine.settings.data_dir / "log_records")] == [150]
    assert len(list(folder.glob("*.parquet"))) == 1
    merged = _read_partition(engine, DAY)
    assert sorted(merged.column("request_id").to_pylist()) == sorted(
        r for t in written for r in t.column("request_id").to_pylist())
