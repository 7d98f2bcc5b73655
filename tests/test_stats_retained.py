"""Late records for a day whose raw partition the log cleaner dropped: added to the rollups it kept.

Real lake, real DuckDB, real SQLite: two days are ingested, rolled up and summarized, the cleaner drops
the first, and late batches arrive for it. Expectations are computed in plain Python from the records.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine import Engine, catalog, queries
from engine.tables import (
    HIST_SCHEMA,
    LATENCY_BASE,
    LATENCY_HOURLY,
    ROLLUP_SCHEMA,
    ROLLUPS_BASE,
    ROLLUPS_HOURLY,
    LakeTable,
)
from engine.times import midnight
from tests.factories import make_engine
from tests.stats_records import records

NOW = dt.datetime(2026, 3, 12, 9, 0, tzinfo=dt.UTC)
DAY1, DAY2 = dt.date(2026, 3, 10), dt.date(2026, 3, 11)
HOUR = dt.timedelta(hours=1)
GRAIN = ("hour", "master_id", "key_id", "model", "provider_id", "provider_key_id", "status_class")


@pytest.fixture
def dropped(tmp_path: Path) -> tuple[Engine, pa.Table]:
    """Two summarized days, the first one's raw partition dropped by the cleaner; returns its records."""
    engine = make_engine(tmp_path, NOW, log_retention_days=2)
    day1 = records(600, 1, midnight(DAY1), midnight(DAY2))
    engine.ingest_table(day1)
    engine.ingest_table(records(400, 2, midnight(DAY2), midnight(DAY2) + 24 * HOUR))
    assert engine.stats.run_daily(NOW) == 2
    outcome = engine.cleaner.run(NOW)
    assert [d["day"] for d in outcome.details["days"] if d["action"] == "drop"] == [DAY1.isoformat()]
    assert engine.stats.raw_days() == [DAY2]
    return engine, day1


def _late(seed: int, n: int = 40) -> pa.Table:
    """Late records in hours 3 and 4 of day 1, hours its dropped records also fell in."""
    return records(n, seed, midnight(DAY1) + 3 * HOUR, midnight(DAY1) + 5 * HOUR, f"late{seed}")


# -- the independent computation --------------------------------------------------------------------


def _bucket(ms: int) -> int:
    """sql/definitions.sql latency_bucket, in plain Python."""
    return 0 if ms <= 0 else math.ceil(math.log(ms) / math.log(1.02)) + 1


def _records(*tables: pa.Table) -> list[dict[str, Any]]:
    return [r for t in tables for r in t.to_pylist() if r["created_at"].date() == DAY1]


def expected_rollups(*tables: pa.Table) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Day 1's rollups_hourly rows from its records: {grain: metrics}."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in _records(*tables):
        hour = r["created_at"].replace(minute=0, second=0, microsecond=0)
        groups[(hour, r["master_id"], r["key_id"], r["model"], r["provider_id"], r["provider_key_id"],
                f"{r['status_code'] // 100}xx")].append(r)
    out = {}
    for key, rs in groups.items():
        status = [r["status_code"] for r in rs]
        ttft = [r["ttft_ms"] for r in rs if r["ttft_ms"] is not None]
        out[key] = {
            "requests": len(rs),
            "successes": sum(s < 400 for s in status),
            "errors": sum(s >= 400 and s != 429 for s in status),
            "rate_limited": sum(s == 429 for s in status),
            "provider_failures": sum(r["provider_key_id"] is not None and r["status_code"] >= 500 for r in rs),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rs),
            "completion_tokens": sum(r["completion_tokens"] for r in rs),
            "total_tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in rs),
            "quota_cost": sum(r["quota_cost"] for r in rs),
            "latency_sum": sum(r["latency_ms"] for r in rs),
            "latency_max": max(r["latency_ms"] for r in rs),
            "streams": sum(bool(r["is_stream"]) for r in rs),
            "ttft_n": len(ttft),
            "ttft_sum": sum(ttft) if ttft else None,
            "ttft_max": max(ttft, default=None),
        }
    return out


def expected_histograms(*tables: pa.Table) -> Counter[tuple[Any, ...]]:
    """Day 1's latency_hourly counts from its records: {(hour, dim, id, metric, bucket): n}."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for r in _records(*tables):
        hour = r["created_at"].replace(minute=0, second=0, microsecond=0)
        ids = {"gateway": None, "master": str(r["master_id"]), "key": str(r["key_id"]), "model": r["model"],
               "provider": None if r["provider_id"] is None else str(r["provider_id"]),
               "provider_key": None if r["provider_key_id"] is None else str(r["provider_key_id"])}
        for metric, value in (("latency", r["latency_ms"]), ("ttft", r["ttft_ms"])):
            if value is not None:
                for dim, id_ in ids.items():
                    counts[(hour, dim, id_, metric, _bucket(value))] += 1
    return counts


# -- what the engine holds --------------------------------------------------------------------------


def rollups(engine: Engine, day: dt.date = DAY1) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = engine.sql(f"SELECT * EXCLUDE (date) FROM rollups_hourly WHERE date = DATE '{day}'").to_pylist()
    out = {tuple(r[c] for c in GRAIN): {k: v for k, v in r.items() if k not in GRAIN} for r in rows}
    assert len(out) == len(rows), "one row per grain"
    return out


def histograms(engine: Engine, day: dt.date = DAY1) -> Counter[tuple[Any, ...]]:
    rows = engine.sql(f"SELECT * FROM latency_hourly WHERE date = DATE '{day}'").to_pylist()
    out = Counter({(r["hour"], r["dim"], r["id"], r["metric"], r["b"]): r["n"] for r in rows})
    assert len(out) == len(rows), "one row per bucket"
    return out


def files(engine: Engine, day: dt.date) -> dict[str, bytes]:
    data = engine.settings.data_dir
    return {t.name: (data / t.file(day)).read_bytes() for t in (ROLLUPS_HOURLY, LATENCY_HOURLY)}


def assert_holds(engine: Engine, *tables: pa.Table) -> None:
    """Day 1's hourly rollups and histograms, and the stats read for it, hold exactly these records."""
    assert rollups(engine) == expected_rollups(*tables)
    hist = histograms(engine)
    assert hist == expected_histograms(*tables)
    gateway = sum(n for (_, dim, _, metric, _), n in hist.items() if dim == "gateway" and metric == "latency")
    assert gateway == len(_records(*tables))
    assert engine.stats.read("custom", DAY1, DAY1).model_dump()["totals"]["requests"] == len(_records(*tables))


# -- refresh ----------------------------------------------------------------------------------------


def test_the_cleaner_records_each_drop_and_a_dry_run_none(dropped: tuple[Engine, pa.Table]) -> None:
    engine, _ = dropped
    assert engine.cleaner.drops.days() == {DAY1: 1}
    assert engine.jobs.dry_run("log_cleaner").rows == 0
    assert engine.cleaner.drops.days() == {DAY1: 1}


def test_a_late_batch_into_a_dropped_day_is_added_to_its_rollups(dropped: tuple[Engine, pa.Table]) -> None:
    engine, day1 = dropped
    assert_holds(engine, day1)
    day2 = files(engine, DAY2)
    late = _late(11)
    engine.ingest_table(late)
    assert engine.stats.refresh_rollups(NOW) == 1
    assert_holds(engine, day1, late)
    assert files(engine, DAY2) == day2
    assert engine.stats.late_days() == [DAY1]


def test_refreshing_again_or_redoing_the_batch_counts_it_once(dropped: tuple[Engine, pa.Table]) -> None:
    engine, day1 = dropped
    with engine.store.connect() as con:
        mark = con.execute("SELECT value FROM stats_watermarks WHERE name = 'rollups_hourly'").fetchone()["value"]
    late = _late(12)
    engine.ingest_table(late)
    engine.stats.refresh_rollups(NOW)
    assert engine.stats.refresh_rollups(NOW) == 0
    assert_holds(engine, day1, late)
    # A crash after the day's files were published but before the watermark moved: the batch is redone.
    with engine.store.connect() as con:
        con.execute("UPDATE stats_watermarks SET value = ? WHERE name = 'rollups_hourly'", (mark,))
    assert engine.stats.refresh_rollups(NOW) == 1
    assert_holds(engine, day1, late)


def test_a_second_late_batch_is_added_once(dropped: tuple[Engine, pa.Table]) -> None:
    engine, day1 = dropped
    first, second = _late(13), _late(14, n=25)
    engine.ingest_table(first)
    engine.stats.refresh_rollups(NOW)
    engine.ingest_table(second)
    engine.stats.refresh_rollups(NOW)
    assert_holds(engine, day1, first, second)


def test_late_files_merged_by_compaction_before_the_refresh_count_once(tmp_path: Path,
                                                                      dropped: tuple[Engine, pa.Table]) -> None:
    engine, day1 = dropped
    first, second = _late(15), _late(16)
    engine.ingest_table(first)
    engine.ingest_table(second)
    outcome = make_engine(tmp_path, NOW, compaction_target_rows=1000).compactor.run(NOW)
    assert [(p["day"], p["files_in"], p["files_out"]) for p in outcome.details["partitions"]] == [
        (DAY1.isoformat(), 2, 1)]
    engine.stats.refresh_rollups(NOW)
    assert_holds(engine, day1, first, second)


def test_a_day_dropped_again_keeps_what_its_first_late_batch_added(dropped: tuple[Engine, pa.Table]) -> None:
    engine, day1 = dropped
    first, second = _late(17), _late(18)
    engine.ingest_table(first)
    engine.stats.refresh_rollups(NOW)
    engine.stats.backfill(DAY1, DAY1)  # rewrites the late day's stats, so the cleaner may drop it again
    assert [d.action for d in engine.cleaner.plan(NOW).decisions] == ["drop"]
    engine.cleaner.run(NOW)
    assert engine.cleaner.drops.days() == {DAY1: 2}
    engine.ingest_table(second)
    engine.stats.refresh_rollups(NOW)
    assert_holds(engine, day1, first, second)


# -- backfill ---------------------------------------------------------------------------------------


def test_backfill_keeps_a_dropped_days_rollups_and_rewrites_its_daily_stats(
        dropped: tuple[Engine, pa.Table]) -> None:
    engine, day1 = dropped
    late = _late(19)
    engine.ingest_table(late)
    engine.stats.refresh_rollups(NOW)
    before = files(engine, DAY1)
    assert engine.stats.read_daily(DAY1, DAY1).model_dump()["days"][0]["requests"] == len(day1)

    one, two = engine.stats.backfill(DAY1, DAY2)
    assert (one.ok, one.rollup_rows, one.daily) == (True, None, "written")
    assert "dropped by log retention" in one.details["rollups"]
    assert one.to_dict()["details"] == one.details
    assert two.rollup_rows and two.daily == "kept" and two.details == {}
    assert files(engine, DAY1) == before
    assert_holds(engine, day1, late)
    assert engine.stats.late_days() == []
    assert engine.stats.read_daily(DAY1, DAY1).model_dump()["days"][0]["requests"] == len(day1) + len(late)

    (forced,) = engine.stats.backfill(DAY1, DAY1, force=True)
    assert (forced.rollup_rows, forced.daily) == (None, "written")
    assert files(engine, DAY1) == before


# -- the queries, on hand-made rows -----------------------------------------------------------------

H3, H4, H5 = (midnight(DAY1) + k * HOUR for k in (3, 4, 5))


def _rollup_row(hour: dt.datetime, key_id: int, provider_id: int | None, requests: int, latency_max: int,
                ttft: list[int]) -> dict[str, Any]:
    return {"hour": hour, "master_id": 1, "key_id": key_id, "model": "m", "provider_id": provider_id,
            "provider_key_id": None if provider_id is None else provider_id * 10, "status_class": "2xx",
            "requests": requests, "successes": requests, "errors": 0, "rate_limited": 0, "provider_failures": 0,
            "prompt_tokens": 10 * requests, "completion_tokens": requests, "total_tokens": 11 * requests,
            "quota_cost": requests, "latency_sum": latency_max * requests, "latency_max": latency_max,
            "streams": len(ttft), "ttft_n": len(ttft), "ttft_sum": sum(ttft) if ttft else None,
            "ttft_max": max(ttft, default=None)}


#: What rollup_add.sql and latency_add.sql add to: the hours a refresh folds new files into, or a dropped day's base.
STORED = pytest.mark.parametrize("stored", [(ROLLUPS_HOURLY, LATENCY_HOURLY), (ROLLUPS_BASE, LATENCY_BASE)],
                                 ids=["hourly", "base"])


def _run_add(engine: Engine, query: str, stored: tuple[LakeTable, LakeTable], base: pa.Table, fresh: pa.Table
             ) -> list[dict[str, Any]]:
    rollups = query == "rollup_add"
    table = stored[0] if rollups else stored[1]
    engine.lake.publish_file(base, table.file(DAY1))
    con = engine.connect()
    try:
        catalog.register(con, table, engine.settings.data_dir)
        con.execute(f"CREATE TEMP VIEW {'rollup' if rollups else 'latency'}_stored AS SELECT * FROM {table.name}")
        con.register("rollup_fresh" if rollups else "latency_fresh", fresh)
        return queries.run(con, query, day=DAY1, hours=[H3, H4]).to_pylist()
    finally:
        con.close()


@STORED
def test_rollup_add_adds_the_rows_of_the_wanted_hours(tmp_path: Path, stored: tuple[LakeTable, LakeTable]) -> None:
    engine = make_engine(tmp_path, NOW)
    base = [_rollup_row(H3, 1, 7, 2, 50, []), _rollup_row(H3, 2, None, 1, 30, [4]),
            _rollup_row(H5, 1, 7, 9, 90, [])]  # H5 is not wanted: left out
    fresh = [_rollup_row(H3, 1, 7, 1, 80, [7]), _rollup_row(H4, 3, None, 1, 5, [])]
    got = _run_add(engine, "rollup_add", stored, pa.Table.from_pylist(base, ROLLUP_SCHEMA),
                   pa.Table.from_pylist(fresh, ROLLUP_SCHEMA))
    added = {**_rollup_row(H3, 1, 7, 3, 80, [7]), "latency_sum": 2 * 50 + 80}
    assert got == [added, base[1], fresh[1]]


@STORED
def test_latency_add_adds_the_counts_of_the_wanted_hours(tmp_path: Path, stored: tuple[LakeTable, LakeTable]) -> None:
    engine = make_engine(tmp_path, NOW)

    def hist(*rows: tuple[dt.datetime, str, str | None, str, int, int]) -> pa.Table:
        return pa.Table.from_pylist([dict(zip(HIST_SCHEMA.names, r, strict=True)) for r in rows], HIST_SCHEMA)

    base = hist((H3, "gateway", None, "latency", 5, 2), (H3, "provider", None, "latency", 5, 1),
                (H5, "gateway", None, "latency", 5, 4))
    fresh = hist((H3, "gateway", None, "latency", 5, 3), (H3, "provider", None, "latency", 6, 1),
                 (H4, "model", "m", "ttft", 0, 1))
    got = [tuple(r.values()) for r in _run_add(engine, "latency_add", stored, base, fresh)]
    assert got == [(H3, "gateway", None, "latency", 5, 5), (H3, "provider", None, "latency", 5, 1),
                   (H3, "provider", None, "latency", 6, 1), (H4, "model", "m", "ttft", 0, 1)]
