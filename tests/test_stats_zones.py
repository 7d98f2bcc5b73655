"""Stats in a request's time zone (`tz`): periods and day/hour buckets follow local days, DST included,
and every answer equals a recomputation over the raw records in that zone (tests/stats_oracle.py).

The lake's closed days are rolled up (hourly and daily tiers), so whole-hour zones are answered from
the rollups; Asia/Kolkata (+05:30) cuts every local boundary through a UTC hour, which is read raw.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from engine import Engine, Settings
from engine.errors import InvalidParameter
from tests.stats_oracle import check, expected, frame
from tests.stats_records import records

NOW = dt.datetime(2026, 3, 11, 9, 20, tzinfo=dt.UTC)
DST_DAY = dt.date(2026, 3, 8)  # America/New_York springs forward at 02:00 local: a 23-hour day


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("zones"), scheduler_enabled=False),
                    clock=lambda: NOW)
    table = records(12_000, 5, dt.datetime(2026, 3, 4, tzinfo=dt.UTC), NOW)
    engine.ingest_table(table)
    engine.stats.run_daily(NOW)  # hourly rollups and the daily tier of every closed day
    return engine, frame(table)


def _local_day(day: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """[local midnight, next local midnight) as UTC instants, computed here with zoneinfo directly."""
    zone = ZoneInfo(tz)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    nxt = day + dt.timedelta(days=1)
    return start.astimezone(dt.UTC), dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(dt.UTC)


def test_a_plus_eight_day_is_the_raw_records_of_that_local_day(lake):
    engine, df = lake
    got = engine.stats.read("custom", DST_DAY, DST_DAY, tz="Asia/Shanghai").model_dump()
    start, end = _local_day(DST_DAY, "Asia/Shanghai")
    assert (got["start"], got["end"], got["tz"]) == (start, end, "Asia/Shanghai")
    assert start == dt.datetime(2026, 3, 7, 16, tzinfo=dt.UTC)
    check(got["totals"], expected(df, start, end)[None], got["percentiles"] == "exact")
    assert got["sources"] == {"rollup_hours": 24, "raw_hours": 0, "daily_days": 0, "lost_hours": []}  # whole hours: rollups only


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "UTC"])
def test_day_groups_are_local_days(lake, tz):
    engine, df = lake
    first, last = dt.date(2026, 3, 5), dt.date(2026, 3, 10)
    got = engine.stats.read("custom", first, last, group_by="day", tz=tz).model_dump()
    start, end = _local_day(first, tz)[0], _local_day(last, tz)[1]
    assert (got["start"], got["end"]) == (start, end)
    want = expected(df, start, end, "day", tz=tz)
    assert [g["group"] for g in got["groups"]] == sorted(want)
    for g in got["groups"]:
        check(g, want[g["group"]], got["percentiles"] == "exact")
    check(got["totals"], expected(df, start, end)[None], got["percentiles"] == "exact")


def test_a_dst_day_has_23_hours_and_its_own_counts(lake):
    engine, df = lake
    tz = "America/New_York"
    got = engine.stats.read("custom", DST_DAY, DST_DAY, tz=tz).model_dump()
    start, end = _local_day(DST_DAY, tz)
    assert (start, end) == (dt.datetime(2026, 3, 8, 5, tzinfo=dt.UTC), dt.datetime(2026, 3, 9, 4, tzinfo=dt.UTC))
    assert (got["start"], got["end"]) == (start, end)
    check(got["totals"], expected(df, start, end)[None], got["percentiles"] == "exact")
    hours = engine.stats.series("custom", "hour", "requests", first=DST_DAY, last=DST_DAY, tz=tz).model_dump()
    assert len(hours["rows"]) == 23
    want = expected(df, start, end, "hour", tz=tz)
    assert {r["time"]: r["requests"] for r in hours["rows"]} == {
        t: want.get(t, {"requests": 0})["requests"] for t in (r["time"] for r in hours["rows"])}
    days = engine.stats.series("custom", "day", "requests", first=dt.date(2026, 3, 7), last=dt.date(2026, 3, 9),
                               tz=tz).model_dump()
    want_days = expected(df, _local_day(dt.date(2026, 3, 7), tz)[0], _local_day(dt.date(2026, 3, 9), tz)[1], "day",
                         tz=tz)
    assert days["rows"] == [
        {"time": _local_day(dt.date(2026, 3, d), tz)[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
         "requests": want_days[f"2026-03-{d:02d}"]["requests"]} for d in (7, 8, 9)]
    assert days["rows"][1]["time"] == "2026-03-08T05:00:00Z" and days["rows"][2]["time"] == "2026-03-09T04:00:00Z"


def test_a_half_hour_zone_is_exact(lake):
    engine, df = lake
    tz = "Asia/Kolkata"
    got = engine.stats.read("custom", DST_DAY, dt.date(2026, 3, 9), group_by="day", tz=tz).model_dump()
    start, end = _local_day(DST_DAY, tz)[0], _local_day(dt.date(2026, 3, 9), tz)[1]
    assert start == dt.datetime(2026, 3, 7, 18, 30, tzinfo=dt.UTC)
    want = expected(df, start, end, "day", tz=tz)
    assert [g["group"] for g in got["groups"]] == ["2026-03-08", "2026-03-09"]
    for g in got["groups"]:
        check(g, want[g["group"]], got["percentiles"] == "exact")
    assert got["sources"]["raw_hours"] == 3  # the start's hour, the boundary between the days, the end's hour
    hours = engine.stats.series("custom", "hour", "errors", first=DST_DAY, last=DST_DAY, tz=tz).model_dump()
    want_h = expected(df, *_local_day(DST_DAY, tz), "hour", tz=tz)
    assert len(hours["rows"]) == 24 and all(r["time"].endswith(":30:00Z") for r in hours["rows"])
    assert {r["time"]: r["errors"] for r in hours["rows"]} == {
        r["time"]: want_h.get(r["time"], {"errors": 0})["errors"] for r in hours["rows"]}


def test_named_periods_start_at_local_midnight(lake):
    engine, df = lake
    for tz in ("Asia/Shanghai", "America/New_York"):
        zone = ZoneInfo(tz)
        today = NOW.astimezone(zone).date()
        got = engine.stats.read("last7d", tz=tz).model_dump()
        start = _local_day(today - dt.timedelta(days=6), tz)[0]
        assert (got["start"], got["end"]) == (start, NOW)
        check(got["totals"], expected(df, start, NOW)[None], got["percentiles"] == "exact")
        week = engine.stats.read("week", tz=tz).model_dump()
        assert week["start"] == _local_day(today - dt.timedelta(days=today.weekday()), tz)[0]


def test_default_zone_comes_from_the_setting(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False, default_tz="Asia/Shanghai"),
                    clock=lambda: NOW)
    got = engine.stats.read("today").model_dump()
    assert got["tz"] == "Asia/Shanghai" and got["start"] == dt.datetime(2026, 3, 10, 16, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="time zone"):
        Settings(default_tz="Mars/Olympus")


def test_unknown_zone_is_refused(lake):
    engine, _ = lake
    with pytest.raises(InvalidParameter, match="time zone"):
        engine.stats.read("today", tz="Asia/Atlantis")
