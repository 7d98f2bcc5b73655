"""The lake writer: partitions by UTC day, file layout, atomic publish, idempotent replay, recovery."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine import Engine
from engine.lake import OWNER_LOCK, _Request, _Share, content_batch_id
from engine.schema import LOG_RECORD_SCHEMA
from engine.validation import ValidBatch, validate
from tests.conftest import make_record


def table_of(records: list[dict]) -> pa.Table:
    return validate(pa.Table.from_pylist(records))


def parquet_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "log_records").glob("**/*.parquet"))


def test_batch_across_midnight_lands_in_both_days(engine: Engine):
    records = [
        make_record(0, created_at="2026-01-01T23:59:59.999999Z"),
        make_record(1, created_at="2026-01-02T00:00:00Z"),
        make_record(2, created_at="2026-01-01T23:00:00+00:00"),
        make_record(3, created_at="2026-01-02T07:59:59+08:00"),  # 23:59:59 UTC on the 1st
    ]
    receipt = engine.ingest_table(pa.Table.from_pylist(records))
    assert receipt.records == 4 and len(receipt.files) == 2
    by_day = {p.parent.name: pq.read_table(p).column("request_id").to_pylist() for p in parquet_files(engine.settings.data_dir)}
    assert by_day == {"date=2026-01-01": ["req-2", "req-3", "req-0"], "date=2026-01-02": ["req-1"]}


def test_files_are_zstd_sorted_with_row_groups_and_statistics(engine: Engine, settings):
    settings.row_group_rows = 1000
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    records = [make_record(i, created_at=(base + dt.timedelta(seconds=(i * 7919) % 3000)).isoformat()) for i in range(2500)]
    engine.ingest_table(pa.Table.from_pylist(records))
    (path,) = parquet_files(settings.data_dir)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 2500
    col = LOG_RECORD_SCHEMA.get_field_index("created_at")
    stats = [meta.row_group(i).column(col).statistics for i in range(3)]
    assert all(s.has_min_max for s in stats)
    assert stats[0].max <= stats[1].min and stats[1].max <= stats[2].min
    assert meta.row_group(0).column(0).compression == "ZSTD"
    times = pq.read_table(path).column("created_at").to_pylist()
    assert times == sorted(times)
    assert pq.read_schema(path).remove_metadata() == LOG_RECORD_SCHEMA


def test_replay_with_the_same_key_stores_nothing_new(engine: Engine):
    batch = pa.Table.from_pylist([make_record(i) for i in range(10)])
    first = engine.ingest_table(batch, "client-key-1")
    files_before = parquet_files(engine.settings.data_dir)
    again = engine.ingest_table(batch, "client-key-1")
    assert again.replayed and not first.replayed
    assert (again.records, again.files) == (first.records, first.files)
    assert parquet_files(engine.settings.data_dir) == files_before
    # Without a key the content hash is the id: the same body twice is stored once.
    body = "\n".join(json.dumps(make_record(100 + i)) for i in range(5)).encode()
    a = engine.ingest_body(body, "application/x-ndjson")
    b = engine.ingest_body(body, "application/x-ndjson")
    assert a.batch_id == b.batch_id == content_batch_id(body) and b.replayed
    assert engine.sql("SELECT count(*) n, count(DISTINCT request_id) d FROM log_records").to_pylist() == [{"n": 15, "d": 15}]


def test_recover_removes_dead_staging_and_rolls_forward_publishing_batches(settings):
    engine = Engine(settings)
    # A writer that died while encoding: a staging folder with a file and no ledger row.
    dead = settings.staging_dir / "deadbeef"
    dead.mkdir()
    (dead / "2026-01-01-part-x.parquet").write_bytes(b"PAR1 half written")
    # A writer that died mid-publish: staged files recorded as publishing, one already renamed.
    table = table_of([make_record(0, created_at="2026-01-01T10:00:00Z"), make_record(1, created_at="2026-01-02T10:00:00Z")])
    crashed = settings.staging_dir / "cafe"
    crashed.mkdir()
    staged, _ = engine.lake._encode(table, crashed, "batch-x")
    request = _Request(ValidBatch.of(table), "batch-x", None)
    engine.lake._begin_group([(request, _Share(2, 0, staged, ["2026-01-01T10:00:00+00:00"]))], crashed)
    engine.lake._publish(crashed, staged[:1])
    # A live writer's folder (its owner lock held) must be left alone.
    live = settings.staging_dir / "live"
    live.mkdir()
    import fcntl

    fd = os.open(live / OWNER_LOCK, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        reopened = Engine(settings)  # recovery runs on open
        assert not dead.exists() and not crashed.exists() and live.exists()
        assert reopened.ingest_table(table, "batch-x").replayed
        got = reopened.sql("SELECT request_id FROM log_records ORDER BY 1").column(0).to_pylist()
        assert got == ["req-0", "req-1"]
    finally:
        os.close(fd)


def test_globs_never_see_staging_files(engine: Engine, settings):
    engine.ingest_table(pa.Table.from_pylist([make_record(0)]))
    leftover = settings.staging_dir / "abc"
    leftover.mkdir()
    pq.write_table(table_of([make_record(9)]), leftover / "2026-01-01-part-y.parquet")
    pattern = str(settings.data_dir / "log_records" / "**" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall() == [(1,)]
    assert pl.scan_parquet(pattern).select(pl.len()).collect().item() == 1
