"""Quota usage from rollups plus raw records equals the sum over the raw records: any instant, every
period type, manual resets off the hour, late records before and after the rollups take them in, and
days whose raw records retention dropped (then only the rollups can answer)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine
from engine.quotas import NEVER_START, current_start
from engine.tables import ROLLUPS_DAILY
from tests.factories import make_engine, records

UTC = dt.UTC
NOW = dt.datetime(2026, 4, 1, 10, 20, tzinfo=UTC)    # Wednesday, a month start
FIRST = NOW - dt.timedelta(days=40)
REFRESHED = NOW - dt.timedelta(days=2, hours=5)       # when the rollups last took in the lake
#: key: (period, manual reset or None). The resets are off the hour, on the hour, and at midnight.
QUOTAS = {1: ("daily", None), 2: ("weekly", None), 3: ("monthly", None), 4: ("never", None),
          5: ("never", dt.datetime(2026, 3, 5, 13, 17, 23, 250_000, tzinfo=UTC)),
          6: ("monthly", dt.datetime(2026, 3, 31, 22, 0, tzinfo=UTC)),
          7: ("weekly", dt.datetime(2026, 3, 30, 0, 0, tzinfo=UTC))}

Traffic = list[tuple[dt.datetime, int, int]]


def _spread(rng: random.Random, n: int, start: dt.datetime, end: dt.datetime) -> Traffic:
    seconds = int((end - start).total_seconds())
    return [(start + dt.timedelta(seconds=rng.randrange(seconds), microseconds=rng.randrange(1_000_000)),
             rng.randint(1, 8), rng.randrange(0, 100)) for _ in range(n)]


def _store(engine: Engine, traffic: Traffic) -> None:
    engine.ingest_table(records([t for t, _, _ in traffic], [k for _, k, _ in traffic], [c for _, _, c in traffic]))


def _expected(traffic: Traffic, key: int, start: dt.datetime, end: dt.datetime) -> int:
    return sum(c for t, k, c in traffic if k == key and start <= t < end)


def _check(engine: Engine, traffic: Traffic, now: dt.datetime) -> None:
    for usage in engine.quotas.usage(now):
        quota = engine.quotas.get(usage.key_id)
        assert usage.period_start == current_start(quota, now)
        assert usage.used == _expected(traffic, usage.key_id, usage.period_start, now), (usage.key_id, now)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, Traffic]:
    rng = random.Random(11)
    engine = make_engine(tmp_path_factory.mktemp("usage"), FIRST)
    for key, (period, _) in QUOTAS.items():
        engine.quotas.put(key, 10**9, period)
    traffic = _spread(rng, 3000, FIRST, REFRESHED)
    # Exactly on the boundaries the periods and the resets use: [start, end).
    for moment in (dt.datetime(2026, 4, 1, tzinfo=UTC), dt.datetime(2026, 3, 30, tzinfo=UTC),
                   *(r for _, r in QUOTAS.values() if r)):
        traffic += [(moment, key, 1000) for key in QUOTAS] + [(moment - dt.timedelta(microseconds=1), 5, 7)]
    # In the hour of the reset off the hour, before and after it: the rollups hold that hour whole.
    traffic += [(dt.datetime(2026, 3, 5, 13, 40, tzinfo=UTC), 5, 11), (dt.datetime(2026, 3, 5, 13, 2, tzinfo=UTC), 5, 13)]
    _store(engine, traffic)
    engine.stats.refresh_rollups(REFRESHED)            # hourly rollups of every hour, daily tier of closed days
    assert len(ROLLUPS_DAILY.days(engine.settings.data_dir)) >= 37
    # Late records: into hours the rollups already hold (a week ago, yesterday, the reset hours) and
    # after the refresh, none of them taken in yet: those hours must be read raw.
    late = _spread(rng, 150, NOW - dt.timedelta(days=7), NOW - dt.timedelta(days=6, hours=20))
    late += _spread(rng, 300, REFRESHED - dt.timedelta(hours=3), NOW + dt.timedelta(hours=2))
    _store(engine, late)
    for key, (period, reset) in QUOTAS.items():
        if reset is not None:
            engine.clock = lambda: NOW
            engine.quotas.put(key, 10**9, period, reset)
    return engine, traffic + late


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=0, max_value=int((NOW + dt.timedelta(hours=2) - FIRST).total_seconds())))
def test_usage_equals_the_raw_sum_at_any_instant(lake: tuple[Engine, Traffic], offset: int) -> None:
    engine, traffic = lake
    _check(engine, traffic, FIRST + dt.timedelta(seconds=offset, microseconds=offset % 997))


def test_usage_at_the_instants_that_matter(lake: tuple[Engine, Traffic]) -> None:
    engine, traffic = lake
    assert engine.stats.rollups.pending().hours  # late hours are waiting for the refresh
    for moment in (NOW, REFRESHED, REFRESHED + dt.timedelta(minutes=1), floor_hour(NOW),
                   dt.datetime(2026, 4, 1, tzinfo=UTC), dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC),
                   dt.datetime(2026, 3, 5, 13, 17, 23, 250_000, tzinfo=UTC),
                   dt.datetime(2026, 3, 5, 13, 30, tzinfo=UTC), dt.datetime(2026, 3, 5, 14, 0, tzinfo=UTC),
                   dt.datetime(2026, 3, 31, 22, 0, tzinfo=UTC), dt.datetime(2026, 3, 31, 22, 0, 1, tzinfo=UTC)):
        _check(engine, traffic, moment)


def test_usage_stays_exact_once_the_rollups_take_in_the_late_records(tmp_path: Path) -> None:
    rng = random.Random(5)
    engine = make_engine(tmp_path, FIRST)
    for key in (1, 2, 3, 4):
        engine.quotas.put(key, 10**9, QUOTAS[key][0])
    traffic = _spread(rng, 1500, FIRST, NOW)
    _store(engine, traffic)
    engine.stats.refresh_rollups(NOW)
    _check(engine, traffic, NOW)
    late = _spread(rng, 50, NOW - dt.timedelta(days=3), NOW)
    _store(engine, late)
    _check(engine, traffic + late, NOW)                     # the late hours read raw
    engine.stats.refresh_rollups(NOW)
    assert not engine.stats.rollups.pending().hours
    _check(engine, traffic + late, NOW)                     # and from the refreshed rollups


@pytest.mark.slow
def test_usage_counts_days_whose_raw_records_retention_dropped(tmp_path: Path) -> None:
    # Only the rollups still hold those days: an answer summed from raw records would lose them.
    rng = random.Random(9)
    engine = make_engine(tmp_path, NOW, log_retention_days=10)
    engine.quotas.put(4, 10**9, "never")
    engine.quotas.put(3, 10**9, "monthly")
    traffic = _spread(rng, 2000, FIRST, NOW)
    _store(engine, traffic)
    engine.stats.refresh_rollups(NOW)
    engine.stats.run_daily(NOW)
    engine.jobs.run("log_cleaner")
    assert min(engine.stats.raw_days()) > (NOW - dt.timedelta(days=11)).date()
    [monthly, never] = engine.quotas.usage(NOW)
    assert never.used == _expected(traffic, 4, NEVER_START, NOW)
    assert monthly.used == _expected(traffic, 3, dt.datetime(2026, 4, 1, tzinfo=UTC), NOW)
    raw_only = engine.sql("SELECT coalesce(sum(quota_cost), 0) AS used FROM log_records WHERE key_id = 4")
    assert raw_only["used"][0].as_py() < never.used


def test_usage_sql_on_hand_made_rows(tmp_path: Path) -> None:
    t = dt.datetime(2026, 4, 1, 12, tzinfo=UTC)
    engine = make_engine(tmp_path, NOW)
    _store(engine, [(t - dt.timedelta(days=1), 1, 5), (t, 1, 7), (t + dt.timedelta(minutes=90), 1, 11),
                    (t + dt.timedelta(minutes=5), 2, 13), (t, 3, 17)])
    engine.stats.refresh_rollups(t + dt.timedelta(days=2))
    from engine import queries

    con = engine.connect()
    try:
        common = {"key_ids": [1, 2, 9], "starts": [t - dt.timedelta(days=1, hours=12), t + dt.timedelta(minutes=1), t],
                  "split": t + dt.timedelta(hours=1), "raw_hours": []}
        rolled = queries.run(con, "quota_usage_rollups", **common, daily_days=[t.date() - dt.timedelta(days=1)],
                             hourly_days=[t.date()])
        # Key 1 (from the midnight before): the daily tier of the day before (5) and 12:00 (7); key 2's
        # 12:00 hour starts before its start, so it is the raw part's; key 9 has nothing.
        assert rolled.to_pylist() == [{"key_id": 1, "used": 12}]
        files = sorted(str(p) for p in (engine.settings.data_dir / "log_records").glob("*/*.parquet"))
        raw = queries.run(con, "quota_usage_raw", **common, files=files, lo=t + dt.timedelta(minutes=1),
                          end=t + dt.timedelta(hours=2))
        assert raw.to_pylist() == [{"key_id": 1, "used": 11}, {"key_id": 2, "used": 13}]
        whole = queries.run(con, "quota_usage_raw", **common, files=files, lo=t + dt.timedelta(minutes=1), end=None)
        assert whole.to_pylist() == raw.to_pylist()    # no end: the files are read to their end
        dirty = queries.run(con, "quota_usage_raw", **{**common, "raw_hours": [t]}, files=files, lo=t,
                            end=t + dt.timedelta(hours=1))
        assert dirty.to_pylist() == [{"key_id": 1, "used": 7}, {"key_id": 2, "used": 13}]
        hours = queries.run(con, "quota_usage_hours", day=t.date(), hours=[t, t + dt.timedelta(hours=1)])
        assert [(r["hour"], r["key_id"], r["used"]) for r in hours.to_pylist()] == [
            (t, 1, 7), (t, 2, 13), (t, 3, 17), (t + dt.timedelta(hours=1), 1, 11)]
    finally:
        con.close()


def floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
