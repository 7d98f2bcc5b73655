"""Backfill on a Dask cluster (a real LocalCluster, workers in their own processes) over a lake on S3 (SeaweedFS):
figure for figure what the local executor computes; a worker killed mid-day, then a rerun, changes nothing."""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine import Engine, Settings
from engine.executors import DaskExecutor, LocalExecutor, open_executor
from engine.stats import _BackfillPlan, _worker_stats
from tests.seaweedfs import S3Server

pytestmark = [pytest.mark.scale, pytest.mark.slow]

FIRST = dt.date(2026, 2, 1)
DAYS = 30
LAST = FIRST + dt.timedelta(days=DAYS - 1)
NOW = dt.datetime.combine(LAST + dt.timedelta(days=2), dt.time(6), dt.UTC)


def _day(day: dt.date, n: int = 40) -> pa.Table:
    rng = random.Random(day.toordinal())
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return pa.table({
        "request_id": [f"{day}-{i}" for i in range(n)],
        "created_at": pa.array(sorted(start + dt.timedelta(seconds=rng.randrange(86_400)) for _ in range(n)),
                               pa.timestamp("us", tz="UTC")),
        "master_id": [rng.choice([1, 2, 3]) for _ in range(n)],
        "key_id": [rng.choice([11, 12, 21, 31]) for _ in range(n)],
        "model": [rng.choice(["gpt-4o", "claude", "llama"]) for _ in range(n)],
        "status_code": [rng.choice([200] * 8 + [500, 429]) for _ in range(n)],
        "latency_ms": [rng.randrange(20, 3000) for _ in range(n)],
        "prompt_tokens": [rng.randrange(1, 500) for _ in range(n)],
        "completion_tokens": [rng.randrange(1, 500) for _ in range(n)],
        "quota_cost": [rng.randrange(1, 9) for _ in range(n)],
    })


def _lake(folder: Path, lake_url: str | None = None, endpoint: str | None = None) -> Engine:
    engine = Engine(Settings(data_dir=folder, lake_url=lake_url, s3_endpoint_url=endpoint, scheduler_enabled=False),
                    clock=lambda: NOW)
    for i in range(DAYS):
        engine.ingest_table(_day(FIRST + dt.timedelta(days=i)), batch_id=f"day-{i}")
    return engine


def _figures(engine: Engine) -> dict[str, Any]:
    return {
        # Rows of one day that tie on their sort order may come in either order: a figure is a row, not its place.
        "daily": [sorted(engine.stats.read_daily(FIRST, LAST, grain=g).model_dump()["days"],
                         key=lambda r: (r["date"], str(r["group"]))) for g in ("gateway", "key")],
        "by_day": engine.stats.read("custom", FIRST, LAST, group_by="day").model_dump(exclude={"sources"}),
        "by_model": engine.stats.read("custom", FIRST, LAST, group_by="model").model_dump(exclude={"sources"}),
        "rollups": engine.sql("SELECT * FROM rollups_daily ORDER BY ALL").to_pylist(),
    }


@pytest.fixture(scope="module")
def cluster(s3: S3Server) -> Iterator[str]:
    """Two Dask workers in their own processes (they inherit the S3 credentials); a dead one is restarted."""
    import dask
    from distributed import LocalCluster

    # A task whose worker dies is failed at once (the executor's own retry is what is tested).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as c:
        yield "dask://" + c.scheduler_address.removeprefix("tcp://")


@pytest.fixture(scope="module")
def local_figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    engine = _lake(tmp_path_factory.mktemp("local"))
    results = engine.stats.backfill(FIRST, LAST, executor=LocalExecutor())
    assert [r.daily for r in results] == ["written"] * DAYS
    return _figures(engine)


def test_executor_urls() -> None:
    assert isinstance(open_executor("local"), LocalExecutor)
    assert open_executor("dask://10.0.0.5:8786") == DaskExecutor("dask://10.0.0.5:8786", "tcp://10.0.0.5:8786")
    with pytest.raises(Exception, match="dask://HOST:PORT"):
        open_executor("spark://x")


@pytest.fixture(scope="module")
def s3_lake(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The same records in a lake on S3."""
    return _lake(tmp_path_factory.mktemp("s3"), s3.lake_url(), s3.endpoint)


def test_a_dask_backfill_of_30_days_on_s3_equals_the_local_backfill(
        cluster: str, s3_lake: Engine, local_figures: dict[str, Any]) -> None:
    engine = s3_lake
    results = engine.stats.backfill(FIRST, LAST, executor=open_executor(cluster))
    assert [(r.day, r.daily, r.ok) for r in results] == [
        (FIRST + dt.timedelta(days=i), "written", True) for i in range(DAYS)]
    assert _figures(engine) == local_figures


def _die_mid_day(settings: Settings, plan: _BackfillPlan, day: dt.date) -> None:
    """On a worker: rewrite the day's rollups, then die before its daily stats are written."""
    stats = _worker_stats(settings)
    with stats.rollups.lock():
        stats.rollups.recompute(day, closed=True)
    os._exit(1)


def test_a_worker_killed_mid_day_then_a_rerun_gives_the_same_figures(
        cluster: str, s3_lake: Engine, local_figures: dict[str, Any]) -> None:
    from distributed import Client

    engine = s3_lake
    killed = FIRST + dt.timedelta(days=7)
    objects = engine.infra.lake.objects
    assert objects is not None
    objects.manifest.drop_day("daily_stats", killed, NOW)  # as if the day had never been summarized
    plan = _BackfillPlan(NOW, frozenset(), frozenset(), frozenset(), frozenset(), False, False)
    with Client(cluster.replace("dask://", "tcp://"), set_as_default=False) as client, \
            pytest.raises(Exception, match=r"KilledWorker|died|worker"):
        client.submit(_die_mid_day, engine.settings, plan, killed, pure=False).result(timeout=60)
    # Nothing half-committed: the day has its new rollups whole and no daily stats yet; every other figure
    # is readable.
    assert engine.stats.read_daily(killed, killed).model_dump()["days"] == []
    assert engine.sql(f"SELECT count(*) FROM rollups_hourly WHERE date = DATE '{killed}'").column(0)[0].as_py() > 0
    results = engine.stats.backfill(FIRST, LAST, executor=open_executor(cluster))
    assert all(r.ok for r in results)
    assert _figures(engine) == local_figures
