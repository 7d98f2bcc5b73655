"""Key quotas: usage equals an independent sum for each period type across boundaries; resets once."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import create_app
from engine import Engine
from engine.errors import InvalidParameter, NotFound
from engine.quotas import NEVER_START, period_floor
from tests.conftest import ON_BOTH
from tests.factories import make_engine, records

UTC = dt.UTC
# Wednesday 2026-04-01 10:00: a month start, mid-week.
NOW = dt.datetime(2026, 4, 1, 10, 0, tzinfo=UTC)
KEYS = {1: "daily", 2: "weekly", 3: "monthly", 4: "never"}


def _traffic(seed: int = 1, n: int = 600) -> list[tuple[dt.datetime, int, int]]:
    """(created_at, key_id, quota_cost) spread over the 40 days before NOW and a little after."""
    rng = random.Random(seed)
    start = NOW - dt.timedelta(days=40)
    out = [(start + dt.timedelta(seconds=rng.randrange(41 * 86_400)), rng.choice([1, 2, 3, 4, 5]),
            rng.randrange(0, 50)) for _ in range(n)]
    # Records exactly on the boundaries: a period is [start, end).
    for key in KEYS:
        out.append((dt.datetime(2026, 4, 1, tzinfo=UTC), key, 1000))
        out.append((dt.datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC), key, 10_000))
        out.append((dt.datetime(2026, 3, 30, tzinfo=UTC), key, 100_000))  # Monday
    return out


def _engine(tmp_path: Path, traffic: list[tuple[dt.datetime, int, int]], now: dt.datetime = NOW) -> Engine:
    engine = make_engine(tmp_path, now)
    engine.ingest_table(records([t for t, _, _ in traffic], [k for _, k, _ in traffic], [c for _, _, c in traffic]))
    return engine


def _expected(traffic: list[tuple[dt.datetime, int, int]], key: int, start: dt.datetime, end: dt.datetime) -> int:
    return sum(c for t, k, c in traffic if k == key and start <= t < end)


def test_usage_equals_an_independent_sum_for_each_period_type(tmp_path: Path) -> None:
    traffic = _traffic()
    engine = _engine(tmp_path, traffic)
    engine.clock = lambda: NOW - dt.timedelta(days=45)
    for key, period in KEYS.items():
        engine.quotas.put(key, 1_000_000, period)
    starts = {1: dt.datetime(2026, 4, 1, tzinfo=UTC), 2: dt.datetime(2026, 3, 30, tzinfo=UTC),
              3: dt.datetime(2026, 4, 1, tzinfo=UTC), 4: NEVER_START}
    usage = {u.key_id: u for u in engine.quotas.usage(NOW)}
    assert set(usage) == set(KEYS)  # key 5 has records but no quota
    for key in KEYS:
        assert usage[key].period_start == starts[key]
        assert usage[key].used == _expected(traffic, key, starts[key], NOW), key
    # An hour earlier, still in March: the monthly and daily periods are the previous ones.
    before = NOW - dt.timedelta(hours=11)
    usage = {u.key_id: u for u in engine.quotas.usage(before)}
    assert usage[1].period_start == dt.datetime(2026, 3, 31, tzinfo=UTC)
    assert usage[3].used == _expected(traffic, 3, dt.datetime(2026, 3, 1, tzinfo=UTC), before)
    assert usage[2].used == _expected(traffic, 2, dt.datetime(2026, 3, 30, tzinfo=UTC), before)


@pytest.fixture(scope="module")
def quota_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, list[tuple[dt.datetime, int, int]]]:
    traffic = _traffic(seed=3, n=400)
    engine = _engine(tmp_path_factory.mktemp("quotas"), traffic)
    engine.clock = lambda: SET_AT
    for key, period in KEYS.items():
        engine.quotas.put(key, 10, period)
    return engine, traffic


SET_AT = NOW - dt.timedelta(days=40, hours=3)


@settings(max_examples=40, deadline=None)
@given(offset=st.integers(min_value=0, max_value=41 * 24 * 3600))
def test_usage_matches_at_any_time(quota_lake: tuple[Engine, list], offset: int) -> None:
    engine, traffic = quota_lake
    now = SET_AT + dt.timedelta(seconds=offset)
    for usage in engine.quotas.usage(now):
        period = KEYS[usage.key_id]
        start = period_floor(period, now) or NEVER_START
        assert usage.period_start == start
        assert usage.used == _expected(traffic, usage.key_id, start, now)


@ON_BOTH  # also on the PostgreSQL control store
def test_reset_advances_to_the_boundary_and_catches_up_once(tmp_path: Path) -> None:
    traffic = _traffic()
    engine = _engine(tmp_path, traffic, now=dt.datetime(2026, 3, 20, 8, tzinfo=UTC))
    for key, period in KEYS.items():
        engine.quotas.put(key, 500, period)
    # Down from 2026-03-20 to NOW: one reset per key, to the current period, with the closed period's usage.
    outcome = engine.quotas.reset_due(NOW)
    assert outcome.rows == 3
    assert outcome.details["keys"] == [1, 2, 3]
    for key, new_start in {1: dt.datetime(2026, 4, 1, tzinfo=UTC), 2: dt.datetime(2026, 3, 30, tzinfo=UTC),
                           3: dt.datetime(2026, 4, 1, tzinfo=UTC)}.items():
        assert engine.quotas.get(key).last_reset_at == new_start
        [history] = engine.quotas.resets(key)
        old_start = period_floor(KEYS[key], dt.datetime(2026, 3, 20, 8, tzinfo=UTC))
        assert history["previous"] == old_start.isoformat(timespec="microseconds")
        assert history["used"] == _expected(traffic, key, old_start, new_start)
    assert engine.quotas.get(4).last_reset_at == NEVER_START  # never resets
    # Running again (a second scheduler, a retry) resets nothing.
    assert engine.quotas.reset_due(NOW).rows == 0
    assert engine.quotas.reset_due(NOW + dt.timedelta(hours=5)).rows == 0
    assert engine.quotas.reset_due(dt.datetime(2026, 4, 2, 0, 0, 1, tzinfo=UTC)).rows == 1  # only the daily key
    assert len(engine.quotas.resets(1)) == 2


@ON_BOTH  # also on the PostgreSQL control store
def test_reset_job_through_the_scheduler(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, dt.datetime(2026, 3, 31, 23, 0, tzinfo=UTC))
    engine.quotas.put(7, 100, "daily")
    engine.clock = lambda: NOW
    runs = {r.job: r for r in engine.jobs.run_due(NOW)}
    assert runs["quota_reset"].rows == 1
    assert engine.quotas.get(7).last_reset_at == dt.datetime(2026, 4, 1, tzinfo=UTC)


def test_put_rules(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    with pytest.raises(NotFound):
        engine.quotas.get(1)
    for bad in ((0, 10, "daily"), (1, 0, "daily"), (1, 10, "hourly")):
        with pytest.raises(InvalidParameter):
            engine.quotas.put(*bad)
    with pytest.raises(InvalidParameter):
        engine.quotas.put(1, 10, "daily", NOW + dt.timedelta(seconds=1))
    manual = NOW - dt.timedelta(hours=2)
    assert engine.quotas.put(1, 10, "daily", manual).last_reset_at == manual
    assert engine.quotas.put(1, 20, "daily").last_reset_at == manual  # a new limit keeps the period
    assert engine.quotas.put(1, 20, "monthly").last_reset_at == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert engine.quotas.seed({1: (5, "never"), 2: (5, "weekly")}) == 1
    assert engine.quotas.get(1).quota_limit == 20  # seeding never overrides an admin's quota


@ON_BOTH  # also on the PostgreSQL control store
def test_quota_api(tmp_path: Path) -> None:
    traffic = _traffic()
    engine = _engine(tmp_path, traffic)
    client = TestClient(create_app(engine=engine))
    assert client.get("/admin/keys/1/quota").status_code == 404
    put = client.put("/admin/keys/1/quota", json={"quota_limit": 2000, "reset_period": "daily"})
    assert put.status_code == 200 and put.json()["last_reset_at"] == "2026-04-01T00:00:00Z"
    assert client.put("/admin/keys/2/quota", json={"quota_limit": 0, "reset_period": "daily"}).status_code == 422
    assert client.put("/admin/keys/2/quota", json={"quota_limit": 5, "reset_period": "yearly"}).status_code == 422
    client.put("/admin/keys/3/quota", json={"quota_limit": 10**9, "reset_period": "monthly"})
    usage = client.get("/admin/keys/1/usage").json()
    used = _expected(traffic, 1, dt.datetime(2026, 4, 1, tzinfo=UTC), NOW)
    assert usage["used"] == used and usage["remaining"] == max(2000 - used, 0)
    assert usage["period_end"] == "2026-04-02T00:00:00Z" and usage["key_name"] is None
    engine.registry.sync({"keys": [{"key_id": 1, "name": "acme-prod"}]})
    assert client.get("/admin/keys/1/usage").json()["key_name"] == "acme-prod"
    assert client.get("/admin/keys/9/usage").status_code == 404
    over = client.get("/admin/quotas", params={"over": 0.5}).json()
    assert used >= 1000  # the boundary record at 00:00 costs 1000
    assert [u["key_id"] for u in over] == [1]
    assert [u["key_id"] for u in client.get("/admin/quotas").json()] == [1, 3]  # highest share first
    assert client.get("/admin/quotas", params={"over": -1}).status_code == 422
    assert client.delete("/admin/keys/1/quota").status_code == 204
    assert client.get("/admin/keys/1/quota").status_code == 404


def test_a_manual_reset_starts_the_period_later_until_the_next_boundary(tmp_path: Path) -> None:
    traffic = _traffic()
    engine = _engine(tmp_path, traffic)
    reset_at = NOW - dt.timedelta(hours=3)  # 07:00 on the 1st
    engine.quotas.put(1, 100, "daily", reset_at)
    [usage] = engine.quotas.usage(NOW)
    assert usage.period_start == reset_at and usage.used == _expected(traffic, 1, reset_at, NOW)
    earlier = NOW - dt.timedelta(hours=5)  # before the manual reset: the calendar day
    [usage] = engine.quotas.usage(earlier)
    day = dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert usage.period_start == day and usage.used == _expected(traffic, 1, day, earlier)
    tomorrow = NOW + dt.timedelta(days=1)
    assert engine.quotas.usage(tomorrow)[0].period_start == day + dt.timedelta(days=1)
    assert engine.quotas.reset_due(tomorrow).rows == 1
    assert engine.quotas.resets(1)[0]["used"] == _expected(traffic, 1, reset_at, day + dt.timedelta(days=1))


def test_generate_demo_seeds_the_demo_quotas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    fake = types.ModuleType("engine.demo")  # stands in for engine/demo.py: only its interface matters here
    fake.generate = lambda days, rows, seed, end_day: iter([(end_day, records([NOW - dt.timedelta(hours=1)]))])
    fake.DEMO_QUOTAS = {1: (500, "daily"), 2: (9, "never")}
    fake.until = lambda table, now: table
    fake.request_prefix = lambda day: "r"
    fake.registry = lambda: {"keys": [{"key_id": 1, "name": "demo key"}]}
    monkeypatch.setattr("engine.facade.demo", fake)
    eng = make_engine(tmp_path, NOW)
    eng.quotas.put(2, 77, "weekly")  # an admin's quota is kept
    eng.generate_demo(1, 1000, 1)
    assert {(q.key_id, q.quota_limit, q.reset_period) for q in eng.quotas.list_all()} == {
        (1, 500, "daily"), (2, 77, "weekly")}


def test_quotas_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from cli import app as cli
    from engine.settings import get_settings

    engine = _engine(tmp_path, _traffic())
    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["quotas", "set", "2", "--limit", "100", "--period", "weekly"]).exit_code == 0
        assert runner.invoke(cli, ["quotas", "set", "2", "--limit", "100", "--period", "hourly"]).exit_code == 1
        listed = runner.invoke(cli, ["quotas", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        [row] = json.loads(listed.stdout)
        assert row["key_id"] == 2 and row["reset_period"] == "weekly"
        assert row["used"] == engine.quotas.key_usage(2, dt.datetime.now(UTC)).used
        assert runner.invoke(cli, ["quotas", "list", "--over", "0.5"]).exit_code == 0
    finally:
        get_settings.cache_clear()
