"""The daily stats job and backfill: grains checked against a recomputation, immutability, late data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from engine import Engine, Settings
from engine.tables import DAILY_STATS
from engine.times import midnight
from tests.stats_oracle import COLUMNS, expected, frame
from tests.stats_records import NOW, edge_records, records

DAYS = [dt.date(2026, 3, d) for d in range(12, 18)]


@pytest.fixture
def summarized(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path / "data"), clock=lambda: NOW)
    tables = [records(4000, 21, midnight(DAYS[0]), NOW), edge_records(dt.date(2026, 3, 14))]
    for t in tables:
        engine.ingest_table(t)
    assert engine.stats.run_daily(NOW) == len(DAYS)
    return engine, tables


def _file(engine, day):
    return engine.settings.data_dir / DAILY_STATS.file(day)


@pytest.mark.parametrize("grain", ["gateway", "master", "key", "model", "provider", "provider_key"])
def test_every_grain_matches_recomputation(summarized, grain):
    engine, tables = summarized
    df = frame(*tables)
    for day in DAYS:
        rows = engine.sql(f"SELECT * FROM daily_stats WHERE date = DATE '{day}' AND grain = '{grain}'").to_pylist()
        start = midnight(day)
        want = expected(df, start, start + dt.timedelta(days=1), None if grain == "gateway" else grain)
        column = COLUMNS.get(grain)
        assert len(rows) == len(want)
        for row in rows:
            w = want[row[column] if column else None]
            for name in ("requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
                         "completion_tokens", "total_tokens", "quota_cost", "masters", "keys", "streams"):
                assert row[name] == w[name], (grain, name)
            assert row["latency_max"] == w["latency_max"]
            assert row["latency_avg"] == pytest.approx(w["latency_avg"], rel=1e-12)
            for p in ("p50", "p95", "p99"):
                assert abs(row[f"latency_{p}"] - w[p]) <= 0.01 * w[p]
            if grain != "model":
                assert row["top_models"] == w["top_models"]


def test_ttft_percentile_is_within_one_percent(summarized):
    engine, tables = summarized
    df = frame(*tables)
    for day in DAYS:
        row = engine.sql(f"SELECT * FROM daily_stats WHERE date = DATE '{day}' AND grain = 'gateway'").to_pylist()[0]
        part = df.filter(pl.col("created_at").dt.date() == day).drop_nulls("ttft_ms")
        exact = float(np.quantile(part["ttft_ms"].to_numpy(), 0.95, method="inverted_cdf"))
        assert abs(row["ttft_p95"] - exact) <= 0.01 * exact
        assert row["ttft_avg"] == pytest.approx(part["ttft_ms"].mean(), rel=1e-12)


def test_job_writes_yesterday_after_the_settle_delay_and_never_rewrites(tmp_path):
    day = dt.date(2026, 3, 17)
    engine = Engine(Settings(data_dir=tmp_path / "d"), clock=lambda: NOW)
    engine.ingest_table(records(200, 3, midnight(day), midnight(day) + dt.timedelta(hours=23)))
    assert engine.stats.run_daily(midnight(day + dt.timedelta(days=1)) + dt.timedelta(minutes=2)) == 0
    assert not _file(engine, day).exists()
    assert engine.stats.run_daily(midnight(day + dt.timedelta(days=1)) + dt.timedelta(minutes=5)) == 1
    before = _file(engine, day).read_bytes()
    assert engine.stats.run_daily(NOW) == 0
    assert _file(engine, day).read_bytes() == before


def test_open_day_is_not_summarized(summarized):
    engine, _ = summarized
    assert not _file(engine, NOW.date()).exists()


def test_late_data_is_recorded_not_applied_until_backfill(summarized):
    engine, tables = summarized
    day = DAYS[2]
    before = _file(engine, day).read_bytes()
    late = records(30, 77, midnight(day) + dt.timedelta(hours=3), midnight(day) + dt.timedelta(hours=4), "late")
    engine.ingest_table(late)
    assert engine.stats.run_daily(NOW) == 0
    assert engine.stats.late_days() == [day]
    assert _file(engine, day).read_bytes() == before  # immutable until an explicit backfill
    period = engine.stats.read("custom", day, day).model_dump()
    want = expected(frame(*tables, late), period["start"], period["end"])[None]
    assert period["totals"]["requests"] == want["requests"]  # rollups were corrected
    daily = engine.stats.read_daily(day, day).model_dump()["days"][0]
    assert daily["late_data"] is True and daily["requests"] == want["requests"] - 30

    results = engine.stats.backfill(DAYS[0], DAYS[-1])
    assert [r.daily for r in results] == ["kept", "kept", "written", "kept", "kept", "kept"]
    assert engine.stats.late_days() == []
    fixed = engine.stats.read_daily(day, day).model_dump()["days"][0]
    assert fixed["requests"] == want["requests"] and fixed["late_data"] is False


def test_backfill_twice_changes_nothing(summarized):
    engine, _ = summarized

    def snapshot():
        return {p.relative_to(engine.settings.data_dir): p.read_bytes()
                for folder in ("rollups_hourly", "daily_stats")
                for p in sorted((engine.settings.data_dir / folder).glob("*/*.parquet"))}

    engine.stats.backfill(DAYS[0], NOW.date(), force=True)
    once = snapshot()
    engine.stats.backfill(DAYS[0], NOW.date(), force=True)
    assert snapshot() == once
    engine.stats.backfill(DAYS[0], NOW.date())
    assert snapshot() == once


def test_dry_run_writes_nothing_and_says_what_it_would_do(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path / "d"), clock=lambda: NOW)
    engine.ingest_table(records(100, 4, midnight(DAYS[0]), midnight(DAYS[2])))
    results = engine.stats.backfill(DAYS[0], DAYS[3], dry_run=True)
    assert [r.daily for r in results] == ["would write", "would write", "no records", "no records"]
    assert not (engine.settings.data_dir / "daily_stats").exists()
    assert not (engine.settings.data_dir / "rollups_hourly").exists()


def test_one_bad_day_does_not_stop_the_others(summarized):
    engine, _ = summarized
    bad = (engine.settings.data_dir / "log_records") / f"date={DAYS[1]}" / "corrupt.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    results = engine.stats.backfill(DAYS[0], DAYS[3], force=True)
    assert [r.ok for r in results] == [True, False, True, True]
    assert "corrupt" in (results[1].error or "") or results[1].error


def test_days_without_raw_records_keep_their_rollups(summarized):
    engine, _ = summarized
    day = DAYS[0]
    before = engine.stats.read("custom", day, day).model_dump()["totals"]["requests"]
    for f in ((engine.settings.data_dir / "log_records") / f"date={day}").glob("*.parquet"):
        f.unlink()
    (result,) = engine.stats.backfill(day, day, force=True)
    assert result.ok and result.rollup_rows is None
    assert engine.stats.read("custom", day, day).model_dump()["totals"]["requests"] == before


def test_cached_closed_days_are_recomputed_after_late_data(summarized):
    engine, tables = summarized
    first = engine.stats.read("custom", DAYS[0], DAYS[4], group_by="key").model_dump()  # fills the closed-day cache
    assert first["sources"]["daily_days"] == 5
    late = records(30, 78, midnight(DAYS[2]) + dt.timedelta(hours=7), midnight(DAYS[2]) + dt.timedelta(hours=8),
                   "late2")
    engine.ingest_table(late)
    engine.stats.refresh_rollups(NOW)  # rebuilds the day's daily tier files: new cache key
    again = engine.stats.read("custom", DAYS[0], DAYS[4], group_by="key").model_dump()
    assert again["sources"]["daily_days"] == 5
    want = expected(frame(*tables, late), again["start"], again["end"], "key")
    assert again["totals"]["requests"] == first["totals"]["requests"] + 30
    assert {g["group"]: g["requests"] for g in again["groups"]} == {k: v["requests"] for k, v in want.items()}
