"""Bounded work per stats request: documented limits answered with 422 `limit-exceeded` naming the limit and
what to ask instead, and heavy requests queued so light ones keep going (issue 10, "Found" 6)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from engine.stats import Filters

NOW = dt.datetime(2026, 3, 20, 12, 30, tzinfo=dt.UTC)
FIRST = dt.date(2026, 3, 1)


def traffic(days: int, keys: int) -> pa.Table:
    """One record per key and hour over `days` days before NOW's day, and today's morning."""
    start = dt.datetime.combine(FIRST, dt.time(), dt.UTC)
    times, key_ids = [], []
    hour = start
    while hour < NOW:
        for key in range(1, keys + 1):
            times.append(hour + dt.timedelta(minutes=key))
            key_ids.append(key)
        hour += dt.timedelta(hours=1)
    n = len(times)
    return pa.table({"request_id": [f"r{i}" for i in range(n)], "created_at": pa.array(times, pa.timestamp("us", "UTC")),
                     "master_id": [1] * n, "key_id": key_ids, "model": ["m"] * n, "status_code": [200] * n,
                     "latency_ms": [10] * n, "prompt_tokens": [1] * n, "completion_tokens": [1] * n})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("limits"), scheduler_enabled=False, stats_max_days=31,
                        stats_max_points=2000, stats_max_groups=15)
    engine = Engine(settings, clock=lambda: NOW)
    engine.ingest_table(traffic(19, 12))
    engine.jobs.run("rollups")
    return engine, TestClient(create_app(engine=engine))


def limit(r) -> str:
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert r.json()["type"] == "/problems/limit-exceeded"
    return r.json()["detail"]


def test_a_custom_period_longer_than_the_limit_is_refused(served):
    _, client = served
    detail = limit(client.get("/admin/stats", params={"period": "custom", "from": "2026-01-01", "to": "2026-03-01"}))
    assert "EZ_STATS_MAX_DAYS" in detail and "31 days" in detail and "/admin/stats/daily" in detail
    ok = client.get("/admin/stats", params={"period": "custom", "from": "2026-02-01", "to": "2026-03-03"})
    assert ok.status_code == 200


def test_a_series_over_the_points_limit_is_refused_before_its_query(served, monkeypatch):
    engine, client = served
    hourly = {"period": "custom", "from": "2026-03-01", "to": "2026-03-19", "interval": "hour"}
    # 456 hours: fine alone (under 2,000 points), refused grouped by 12 keys (5,472 points).
    assert client.get("/admin/stats/series", params=hourly).status_code == 200
    ran: list[str] = []
    original = engine.stats.reader._run

    def spy(con, plan, filters, group_by, *args, **kwargs):
        ran.append(group_by)
        return original(con, plan, filters, group_by, *args, **kwargs)

    monkeypatch.setattr(engine.stats.reader, "_run", spy)
    detail = limit(client.get("/admin/stats/series", params={**hourly, "group_by": "key"}))
    assert "5,472 points" in detail and "EZ_STATS_MAX_POINTS" in detail and "interval=day" in detail
    assert ran == ["key"]  # only the cheap count of groups ran, not the hourly query
    daily = client.get("/admin/stats/series", params={**hourly, "interval": "day", "group_by": "key"})
    assert daily.status_code == 200 and len(daily.json()["rows"]) == 19 * 12
    filtered = client.get("/admin/stats/series", params={**hourly, "group_by": "key", "key_id": 3})
    assert filtered.status_code == 200 and len(filtered.json()["rows"]) == 19 * 24


def test_an_answer_with_too_many_groups_is_refused(served):
    engine, client = served
    params = {"period": "custom", "from": "2026-03-18", "to": "2026-03-19"}
    detail = limit(client.get("/admin/stats", params={**params, "group_by": "hour"}))
    assert "48 groups" in detail and "EZ_STATS_MAX_GROUPS" in detail
    assert client.get("/admin/stats", params={**params, "group_by": "key"}).status_code == 200  # 12 keys
    engine.settings.stats_max_groups = 10
    try:
        assert "12 groups" in limit(client.get("/admin/stats", params={**params, "group_by": "key"}))
    finally:
        engine.settings.stats_max_groups = 15


def test_heavy_requests_are_told_apart_from_light_ones(served):
    engine, _ = served
    reader = engine.stats.reader

    def heavy(period: str, first=None, last=None, source="auto", group_by="none", daily=True, filters=Filters()):
        plan = reader.plan(engine.stats.period(period, first, last), source)
        if not daily:  # as before the daily job has run
            plan = dataclasses.replace(plan, daily_days=())
        return reader.heavy(plan, filters, group_by, "none")

    assert not heavy("today") and not heavy("last7d") and not heavy("month")
    assert not heavy("custom", dt.date(2026, 3, 1), dt.date(2026, 3, 19))  # the daily tier
    assert heavy("custom", dt.date(2026, 3, 1), dt.date(2026, 3, 19), daily=False)  # 19 days of hours
    assert heavy("last7d", source="raw") and not heavy("today", source="raw")
    assert heavy("last7d", filters=Filters(master_id=1, key_id=2))  # exact percentiles from raw records


def test_light_requests_keep_going_while_heavy_ones_queue(served):
    engine, client = served
    raw_week = {"period": "last7d", "source": "raw", "group_by": "key"}
    gate = engine.stats.reader._heavy
    gate.acquire()  # a heavy request is running
    done: list[int] = []
    waiting = [threading.Thread(target=lambda: done.append(client.get("/admin/stats", params=raw_week).status_code))
               for _ in range(4)]
    try:
        for t in waiting:
            t.start()
        started = time.monotonic()
        for _ in range(5):
            assert client.get("/admin/stats", params={"period": "today"}).status_code == 200
            assert client.get("/admin/stats", params={"period": "last7d", "group_by": "key"}).status_code == 200
        assert time.monotonic() - started < 30
        time.sleep(0.2)
        assert done == []  # the heavy ones wait their turn
    finally:
        gate.release()
    for t in waiting:
        t.join(timeout=60)
    assert done == [200] * 4


def test_limits_are_settings(tmp_path: Path):
    fields = Settings.model_fields
    for name in ("stats_max_days", "stats_max_points", "stats_max_groups", "stats_heavy_concurrency"):
        assert fields[name].description
    assert Settings(data_dir=tmp_path).stats_max_points == 100_000


def test_the_reported_year_of_hourly_series_by_key_is_refused(tmp_path: Path):
    """The request of the issue, with the default limits: it took 16 s and 2.4 GB; now a quick 422."""
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=lambda: NOW)
    table = traffic(1, 12).slice(0, 12 * 24)  # 12 keys on 2026-03-01
    engine.ingest_table(table)
    engine.jobs.run("rollups")
    client = TestClient(create_app(engine=engine))
    r = client.get("/admin/stats/series", params={"period": "custom", "from": "2026-01-01", "to": "2026-12-31",
                                                  "interval": "hour", "group_by": "key"})
    detail = limit(r)
    assert "105,120 points (8,760 hours x 12 groups)" in detail
    assert client.get("/admin/stats/series", params={"period": "custom", "from": "2026-01-01", "to": "2026-12-31",
                                                     "interval": "day", "group_by": "key"}).status_code == 200
