"""Hypothesis: invariants of stats over arbitrary small batches of records."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Settings
from engine.schema import LOG_RECORD_SCHEMA

START = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 2, 4, 9, 30, tzinfo=dt.UTC)
FIRST, LAST = START.date(), NOW.date()
INT32_MAX = 2**31 - 1
COUNTS = ("requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
          "completion_tokens", "total_tokens", "quota_cost", "streams")

record = st.fixed_dictionaries({
    "offset_us": st.integers(0, int((NOW - START).total_seconds() * 1e6) + 3_600_000_000),
    "key_id": st.integers(1, 4),
    "model": st.sampled_from(["gpt-4o", "模型", "🦙"]),
    "provider_id": st.sampled_from([None, 1, 2]),
    "status_code": st.sampled_from([200, 399, 400, 429, 499, 500, 599]),
    "latency_ms": st.integers(0, 120_000),
    "prompt_tokens": st.sampled_from([0, 7, INT32_MAX]),
    "completion_tokens": st.integers(0, INT32_MAX),
    "ttft_ms": st.none() | st.integers(0, 5000),
})
batches = st.lists(st.lists(record, min_size=1, max_size=25), min_size=1, max_size=3)


def _table(rows: list[dict], batch: int) -> pa.Table:
    n = len(rows)
    return pa.table({
        "request_id": [f"b{batch}-{i}" for i in range(n)],
        "created_at": [START + dt.timedelta(microseconds=r["offset_us"]) for r in rows],
        "master_id": [r["key_id"] % 2 + 1 for r in rows],
        "key_id": [r["key_id"] for r in rows],
        "group": [None] * n,
        "model": [r["model"] for r in rows],
        "provider_id": [r["provider_id"] for r in rows],
        "provider_type": [None] * n,
        "provider_key_id": [None if r["provider_id"] is None else r["provider_id"] * 10 for r in rows],
        "status_code": [r["status_code"] for r in rows],
        "error_type": [None] * n,
        "error_message": [None] * n,
        "latency_ms": [r["latency_ms"] for r in rows],
        "ttft_ms": [r["ttft_ms"] for r in rows],
        "prompt_tokens": [r["prompt_tokens"] for r in rows],
        "completion_tokens": [r["completion_tokens"] for r in rows],
        "quota_cost": [1] * n,
        "is_stream": [r["ttft_ms"] is not None for r in rows],
        "client_ip": [None] * n,
    }, schema=LOG_RECORD_SCHEMA)


@contextmanager
def _lake(groups: list[list[dict]]) -> Iterator[Engine]:
    """Every batch but the last is rolled up; the last lands after the refresh (dirty hours)."""
    with tempfile.TemporaryDirectory(prefix="ezprop-") as folder:
        yield _fill(Engine(Settings(data_dir=Path(folder)), clock=lambda: NOW), groups)


def _fill(engine: Engine, groups: list[list[dict]]) -> Engine:
    for i, rows in enumerate(groups):
        if i == len(groups) - 1 and len(groups) > 1:
            engine.stats.refresh_rollups(NOW)
        engine.ingest_table(_table(rows, i))
    if len(groups) == 1:
        engine.stats.refresh_rollups(NOW)
    return engine


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(batches)
def test_per_day_counts_sum_to_the_range(groups):
    with _lake(groups) as engine:
        whole = engine.stats.read("custom", FIRST, LAST, group_by="day").model_dump()
        for name in COUNTS:
            assert sum(g[name] for g in whole["groups"]) == whole["totals"][name]
        for g in whole["groups"]:
            day = dt.date.fromisoformat(g["group"])
            alone = engine.stats.read("custom", day, day).model_dump()["totals"]
            assert {n: alone[n] for n in (*COUNTS, "masters", "keys")} == {n: g[n] for n in (*COUNTS, "masters", "keys")}
            assert 0 <= g["error_rate"] <= 1


@SETTINGS
@given(batches, st.sampled_from([None, "master", "key", "model", "provider", "provider_key", "day", "hour"]))
def test_rollup_served_answers_equal_raw_served_answers(groups, group_by):
    with _lake(groups) as engine:
        for period in ("last7d", "today", "all"):
            auto = engine.stats.read(period, group_by=group_by).model_dump()
            raw = engine.stats.read(period, group_by=group_by, source="raw").model_dump()
            assert raw["percentiles"] == "exact"
            for a, r in zip([auto["totals"], *auto["groups"]], [raw["totals"], *raw["groups"]], strict=True):
                assert a.get("group") == r.get("group")
                for name in (*COUNTS, "masters", "keys"):
                    assert a[name] == r[name], (period, group_by, name)
                assert a["latency_ms"]["max"] == r["latency_ms"]["max"]
                for p in ("p50", "p95", "p99"):
                    exact, got = r["latency_ms"][p], a["latency_ms"][p]
                    assert (exact is None and got is None) or abs(got - exact) <= 0.01 * exact
            assert auto["top_models"] == raw["top_models"]


@SETTINGS
@given(batches)
def test_backfill_twice_is_backfill_once(groups):
    with _lake(groups) as engine:
        data = engine.settings.data_dir

        def snapshot():
            derived = ("rollups_hourly", "latency_hourly", "rollups_daily", "latency_daily", "daily_stats")
            return {p.relative_to(data): p.read_bytes() for f in derived for p in sorted((data / f).glob("*/*.parquet"))}

        engine.stats.backfill(FIRST, LAST)
        once, answer = snapshot(), engine.stats.read("all", group_by="day").model_dump()
        engine.stats.backfill(FIRST, LAST)
        assert snapshot() == once
        assert engine.stats.read("all", group_by="day").model_dump() == answer
