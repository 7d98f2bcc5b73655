"""Period reads checked metric by metric against a Polars recomputation over the same records."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import Engine, Settings
from engine.stats import GROUP_BYS, Filters
from engine.times import midnight
from tests.stats_oracle import check, expected, frame
from tests.stats_records import NOW, edge_records, records

PERIODS = ["today", "week", "month", "last7d", "last30d", "all", "custom"]
CUSTOM = (dt.date(2026, 2, 27), dt.date(2026, 3, 18))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """40 days of records plus day-boundary edge cases and records after `now`, rolled up; then a
    late batch for a closed hour and a batch in the open hour, not yet rolled up."""
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("lake")), clock=lambda: NOW)
    tables = [
        records(6000, 1, NOW - dt.timedelta(days=40), NOW),
        records(300, 2, NOW, NOW + dt.timedelta(hours=30), "future"),
        edge_records(dt.date(2026, 3, 17)),
        edge_records(dt.date(2026, 3, 1), "edge-month"),
        edge_records(dt.date(2026, 3, 16), "edge-week"),
    ]
    for t in tables:
        engine.ingest_table(t)
    engine.stats.refresh_rollups(NOW)
    late = [records(50, 3, midnight(dt.date(2026, 3, 10)) + dt.timedelta(hours=5),
                    midnight(dt.date(2026, 3, 10)) + dt.timedelta(hours=6), "late"),
            records(40, 4, NOW.replace(minute=0, second=0), NOW, "open")]
    for t in late:
        engine.ingest_table(t)
    return engine, frame(*tables, *late)


def _bounds(engine, name):
    first, last = CUSTOM if name == "custom" else (None, None)
    period = engine.stats.period(name, first, last)
    return first, last, period.start, period.end


@pytest.mark.parametrize("name", PERIODS)
@pytest.mark.parametrize("group_by", [None, *GROUP_BYS])
def test_every_period_and_group_by_matches_recomputation(lake, name, group_by):
    engine, df = lake
    first, last, start, end = _bounds(engine, name)
    got = engine.stats.read(name, first, last, group_by=group_by).model_dump()
    want = expected(df, start, end, group_by)
    assert got["start"] == start and got["end"] == end
    exact = got["percentiles"] == "exact"
    check(got["totals"], want[None] if group_by is None else _total(df, start, end), exact)
    if group_by is None:
        assert got["groups"] == []
    else:
        assert {g["group"] for g in got["groups"]} == set(want)
        for g in got["groups"]:
            check(g, want[g["group"]], exact)
    total_want = expected(df, start, end)[None]
    assert got["top_models"] == total_want["top_models"]


def _total(df, start, end):
    return expected(df, start, end)[None]


def test_periods_resolve_at_the_injected_now(lake):
    engine, _ = lake
    assert engine.stats.period("today").start == midnight(dt.date(2026, 3, 18))
    assert engine.stats.period("week").start == midnight(dt.date(2026, 3, 16))
    assert engine.stats.period("month").start == midnight(dt.date(2026, 3, 1))
    assert engine.stats.period("last7d").start == midnight(dt.date(2026, 3, 12))
    assert engine.stats.period("last30d").start == midnight(dt.date(2026, 2, 17))
    assert engine.stats.period("today").end == NOW
    assert engine.stats.period("custom", *CUSTOM).end == midnight(dt.date(2026, 3, 19))


@pytest.mark.parametrize("filters", [
    {"master_id": 2}, {"key_id": 7}, {"model": "模型-中文"}, {"model": "llama 3 🦙"}, {"provider_id": 3},
    {"provider_key_id": 21}, {"master_id": 1, "model": "gpt-4o"}, {"key_id": 9999},
])
@pytest.mark.parametrize("group_by", [None, "key", "day"])
def test_filters_match_recomputation(lake, filters, group_by):
    engine, df = lake
    got = engine.stats.read("last30d", filters=Filters(**filters), group_by=group_by).model_dump()
    start, end = got["start"], got["end"]
    want = expected(df, start, end, group_by, **filters)
    if not want:
        assert got["totals"]["requests"] == 0 and got["groups"] == [] and got["top_models"] == []
        return
    exact = got["percentiles"] == "exact"
    if group_by is None:
        check(got["totals"], want[None], exact)
    else:
        assert {g["group"] for g in got["groups"]} == set(want)
        for g in got["groups"]:
            check(g, want[g["group"]], exact)


def test_late_and_open_hour_records_are_served_from_raw_until_refreshed(lake):
    # Runs after the parametrized reads (file order), which see the late batch unrefreshed.
    engine, df = lake
    before = engine.stats.read("last30d").model_dump()
    assert before["sources"]["raw_hours"] >= 2  # the late hour, the open hour
    engine.stats.refresh_rollups(NOW)
    after = engine.stats.read("last30d").model_dump()
    assert after["sources"]["raw_hours"] == 1  # only the partial open hour remains raw
    want = expected(df, after["start"], after["end"])[None]
    for got in (before, after):
        check(got["totals"], want, exact=False)


def test_raw_source_gives_exact_percentiles_equal_to_recomputation(lake):
    engine, df = lake
    got = engine.stats.read("last7d", group_by="model", source="raw").model_dump()
    assert got["percentiles"] == "exact"
    want = expected(df, got["start"], got["end"], "model")
    for g in got["groups"]:
        check(g, want[g["group"]], exact=True)


@pytest.fixture
def clocked(tmp_path):
    return Engine(Settings(data_dir=tmp_path / "data"), clock=lambda: NOW)


def test_a_period_inside_the_open_hour_is_exact(clocked):
    engine = clocked
    hour = NOW.replace(minute=0, second=0)
    t = records(500, 5, hour, NOW)
    engine.ingest_table(t)
    engine.stats.refresh_rollups(NOW)
    got = engine.stats.read("custom", NOW.date(), NOW.date()).model_dump()
    # the open hour has rollups now, but a custom day range is cut at whole hours only at its end
    assert got["percentiles"] == "approx"
    engine.stats.read("today").model_dump()  # served without error
    fresh = engine.stats.read("today", source="raw").model_dump()
    assert fresh["percentiles"] == "exact"
    check(fresh["totals"], expected(frame(t), fresh["start"], fresh["end"])[None], exact=True)


def test_empty_lake_answers_zeros(clocked):
    engine = clocked
    got = engine.stats.read("all", group_by="model").model_dump()
    assert got["totals"]["requests"] == 0
    assert got["totals"]["latency_ms"]["p50"] is None
    assert got["groups"] == [] and got["top_models"] == []


def test_series_rows_are_flat_with_iso_times(lake):
    engine, df = lake
    got = engine.stats.series("last7d", "day", "requests", group_by="provider").model_dump()
    want = expected(df, got["start"], got["end"], "day")
    by_day: dict[str, int] = {}
    for row in got["rows"]:
        assert set(row) == {"time", "group", "name", "requests"}
        assert row["time"].endswith("T00:00:00Z")
        by_day[row["time"][:10]] = by_day.get(row["time"][:10], 0) + row["requests"]
    assert by_day == {day: m["requests"] for day, m in want.items()}
    hourly = engine.stats.series("today", "hour", "latency_p95").model_dump()
    want_h = expected(df, hourly["start"], hourly["end"], "hour")
    hours = int((hourly["end"] - hourly["start"]).total_seconds() // 3600) + 1  # the open hour too
    assert [r["time"] for r in hourly["rows"]] == [
        (hourly["start"] + dt.timedelta(hours=h)).strftime("%Y-%m-%dT%H:00:00Z") for h in range(hours)]
    assert set(want_h) <= {r["time"] for r in hourly["rows"]}
    for row in hourly["rows"]:
        if row["time"] in want_h:
            assert abs(row["latency_p95"] - want_h[row["time"]]["p95"]) <= 0.01 * want_h[row["time"]]["p95"]
        else:  # an hour without records: in the series, without a latency
            assert row["latency_p95"] is None


def test_series_fill_intervals_without_records(clocked):
    engine = clocked
    start = midnight(NOW.date())
    t = records(30, 21, start + dt.timedelta(hours=2), start + dt.timedelta(hours=3))
    engine.ingest_table(t)
    got = engine.stats.series("today", "hour", "requests", group_by="model").model_dump()
    models = set(t.column("model").to_pylist())
    hours = [(start + dt.timedelta(hours=h)).strftime("%Y-%m-%dT%H:00:00Z") for h in range(NOW.hour + 1)]
    assert sorted((r["time"], r["group"]) for r in got["rows"]) == sorted((h, m) for h in hours for m in models)
    counted = {(r["time"], r["group"]): r["requests"] for r in got["rows"]}
    for model in models:
        assert counted[(hours[2], model)] == t.column("model").to_pylist().count(model)
        assert all(counted[(h, model)] == 0 for h in hours if h != hours[2])


def test_cached_rollup_hours_are_recomputed_after_late_data(clocked):
    engine = clocked
    midnight_today = midnight(NOW.date())
    t = records(400, 12, midnight_today, NOW)
    engine.ingest_table(t)
    engine.stats.refresh_rollups(NOW)
    first = engine.stats.read("today", group_by="model").model_dump()  # caches the hourly part of today
    late = records(25, 13, midnight_today + dt.timedelta(hours=3), midnight_today + dt.timedelta(hours=4), "late")
    engine.ingest_table(late)
    dirty = engine.stats.read("today", group_by="model").model_dump()  # hour 03:00 read raw, the rest still cached
    engine.stats.refresh_rollups(NOW)
    fresh = engine.stats.read("today", group_by="model").model_dump()  # hour 03:00 has a new version: recomputed
    want = expected(frame(t, late), fresh["start"], fresh["end"], "model")
    assert fresh["sources"]["raw_hours"] == 1 and dirty["sources"]["raw_hours"] == 2
    for got in (dirty, fresh):
        assert got["totals"]["requests"] == first["totals"]["requests"] + 25
        assert {g["group"]: g["requests"] for g in got["groups"]} == {k: v["requests"] for k, v in want.items()}
