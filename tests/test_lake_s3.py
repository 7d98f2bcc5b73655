"""The lake on object storage (SeaweedFS S3) gives every figure the local lake gives, through ingest, stats,
rollups, daily stats, alerts, compaction and retention; the manifest alone decides what is live."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from engine import Engine, Settings
from engine.settings import get_settings
from engine.tables import DAILY_STATS, LOG_RECORDS
from tests.postgres_server import PostgresServer
from tests.seaweedfs import S3Server
from tests.stats_oracle import expected, frame

pytestmark = pytest.mark.scale

NOW = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC)
TODAY = NOW.date()
FIRST = TODAY - dt.timedelta(days=4)


def _batch(day: dt.date, n: int, seed: int, hours: float = 24, start: dt.datetime | None = None,
           errors: int = 1) -> pa.Table:
    """`n` varied records over `hours` hours from the start of `day` (or `start`): errors, rate limits,
    models, keys; `errors` in ten fail with a 500."""
    rng = random.Random(seed)
    start = start or dt.datetime.combine(day, dt.time(), dt.UTC)
    times = sorted(start + dt.timedelta(seconds=rng.randrange(int(hours * 3600))) for _ in range(n))
    return pa.table({
        "request_id": [f"s{seed}-{i}" for i in range(n)],
        "created_at": pa.array(times, pa.timestamp("us", tz="UTC")),
        "master_id": [rng.choice([1, 2]) for _ in range(n)],
        "key_id": [rng.choice([11, 12, 21]) for _ in range(n)],
        "model": [rng.choice(["gpt-4o", "claude", "llama"]) for _ in range(n)],
        "provider_id": [rng.choice([7, 8]) for _ in range(n)],
        "provider_key_id": [rng.choice([70, 80]) for _ in range(n)],
        "is_stream": [rng.random() < 0.5 for _ in range(n)],
        "ttft_ms": [rng.randrange(5, 200) for _ in range(n)],
        "status_code": [rng.choice([200] * (9 - errors) + [500] * errors + [429]) for _ in range(n)],
        "latency_ms": [rng.randrange(20, 3000) for _ in range(n)],
        "prompt_tokens": [rng.randrange(1, 500) for _ in range(n)],
        "completion_tokens": [rng.randrange(1, 500) for _ in range(n)],
        "quota_cost": [rng.randrange(1, 9) for _ in range(n)],
    })


BATCHES = [_batch(FIRST + dt.timedelta(days=d), 120, seed=10 * d + k) for d in range(4) for k in range(3)]
BATCHES.append(_batch(TODAY, 150, seed=99, hours=9))
# A burst of errors in the minutes before NOW, for the alert detector to find.
BATCHES.append(_batch(TODAY, 300, seed=98, hours=0.1, start=NOW - dt.timedelta(minutes=6), errors=5))


def _figures(engine: Engine) -> dict[str, Any]:
    """What a user reads: the stats of the range, per day and per model, and the lake's counts."""
    week = engine.stats.read("custom", FIRST, TODAY, group_by="day")
    models = engine.stats.read("custom", FIRST, TODAY, group_by="model")
    return {
        "totals": week.totals.model_dump(),
        "days": [g.model_dump() for g in week.groups],
        "models": [g.model_dump() for g in models.groups],
        "rows": engine.sql("SELECT date, count(*) AS n FROM log_records GROUP BY ALL ORDER BY ALL").to_pylist(),
    }


def _scenario(engine: Engine, steps: dict[str, Any]) -> None:
    receipts = [engine.ingest_table(b, batch_id=f"b{i}") for i, b in enumerate(BATCHES)]
    assert engine.ingest_table(BATCHES[0], batch_id="b0").replayed  # idempotent on this backend too
    steps["acked"] = sum(r.records for r in receipts)
    steps["ingested"] = _figures(engine)
    # The scheduled jobs, each run as the scheduler runs it (recorded runs).
    assert engine.jobs.run("rollups").outcome == "ok"
    assert engine.jobs.run("daily_stats").outcome == "ok"
    steps["rolled"] = _figures(engine)
    steps["daily"] = engine.stats.read_daily(FIRST, TODAY).model_dump()
    detection = engine.alerts.run_once(NOW)
    steps["alerts"] = (detection.observations, sorted(
        (a.fingerprint, a.severity, a.value) for a in engine.alerts.list_alerts().alerts))
    steps["compaction"] = engine.jobs.run("compaction").details["partitions"]
    steps["compacted"] = _figures(engine)
    steps["cleaned"] = engine.jobs.run("log_cleaner").details["days"]
    steps["retained"] = _figures(engine)
    steps["runs"] = sorted((r.job, r.outcome) for r in engine.jobs.runs())


@pytest.fixture(scope="module")
def both(s3: S3Server, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    """The same scenario on a local lake and on S3 (control store: SQLite), and on S3 with the control store on
    PostgreSQL (the scaled-out deployment), step by step."""
    out: dict[str, Any] = {}
    for name, lake_url, control in (("local", None, None), ("s3", s3.lake_url(), None),
                                    ("s3-postgres", s3.lake_url(), postgres_server.database())):
        settings = Settings(data_dir=tmp_path_factory.mktemp(name), lake_url=lake_url, control_url=control,
                            s3_endpoint_url=s3.endpoint if lake_url else None, scheduler_enabled=False,
                            log_retention_days=3, compaction_target_rows=1000, lake_grace_seconds=60)
        engine = Engine(settings, clock=lambda: NOW)
        steps: dict[str, Any] = {"engine": engine}
        _scenario(engine, steps)
        out[name] = steps
    return out


def test_ingest_then_stats_on_s3_equal_an_independent_recomputation(both: dict[str, Any]) -> None:
    s3 = both["s3"]
    df = frame(*BATCHES)
    want = expected(df, dt.datetime.combine(FIRST, dt.time(), dt.UTC), NOW)[None]
    assert s3["acked"] == df.height == sum(r["n"] for r in s3["ingested"]["rows"])
    assert s3["ingested"]["totals"]["requests"] == want["requests"]
    assert s3["ingested"]["totals"]["errors"] == want["errors"]
    assert s3["ingested"]["totals"]["total_tokens"] == want["total_tokens"]


@pytest.mark.parametrize("step", ["acked", "ingested", "rolled", "daily", "alerts", "compaction", "compacted",
                                  "cleaned", "retained", "runs"])
def test_every_step_gives_on_s3_what_it_gives_locally(both: dict[str, Any], step: str) -> None:
    assert both["s3"][step] == both["local"][step]
    assert both["s3-postgres"][step] == both["local"][step]


def test_s3_lake_is_only_objects_in_the_bucket_and_its_manifest(both: dict[str, Any]) -> None:
    engine: Engine = both["s3"]["engine"]
    objects = engine.infra.lake.objects
    assert objects is not None
    assert not list((engine.settings.data_dir / LOG_RECORDS.folder).glob("*/*.parquet"))  # nothing local
    live = {f.path for f in objects.manifest.live(LOG_RECORDS.folder)}
    held = set(objects.storage.list(LOG_RECORDS.folder))
    # Compaction merged each day's three files into one; the cleaner dropped the two oldest days; the
    # replaced and dropped objects stay in the bucket for the grace period, for readers that listed them.
    assert len(live) == 3 and live < held
    engine.compactor.run(NOW + dt.timedelta(seconds=61))  # past the grace: purged
    assert set(objects.storage.list(LOG_RECORDS.folder)) == live
    assert engine.infra.lake.days(DAILY_STATS) == [FIRST + dt.timedelta(days=d) for d in range(4)]



def test_a_snapshot_reads_the_table_where_a_raw_glob_of_the_bucket_double_counts(
        s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl  # the statement printed for Polars is evaluated as an analyst would paste it

    engine = Engine(Settings(data_dir=tmp_path, lake_url=s3.lake_url(), s3_endpoint_url=s3.endpoint,
                             scheduler_enabled=False, compaction_target_rows=1000), clock=lambda: NOW)
    for i, batch in enumerate(BATCHES[:6]):
        engine.ingest_table(batch, batch_id=f"b{i}")
    engine.compactor.run(NOW)  # two days, three files each, merged: the six small objects wait out the grace
    snap = engine.snapshot()
    assert snap.rows == 720 and len(snap.files) == 2
    objects = engine.infra.lake.objects
    assert objects is not None
    con = duckdb.connect()
    objects.storage.attach(con)  # in Python, DuckDB reads S3 through s3fs (or httpfs with the printed secret)
    select = snap.duckdb.rsplit(";\n", 1)[-1]
    assert con.execute(f"SELECT count(*) FROM ({select})").fetchone() == (720,)
    assert eval(snap.polars, {"pl": pl, "os": os}).select(pl.len()).collect().item() == 720
    glob = objects.storage.path("log_records/*/*.parquet")
    assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone() == (1440,)  # during the grace
    out = tmp_path / "snap.json"
    for name, value in (("EZ_DATA_DIR", str(tmp_path)), ("EZ_LAKE_URL", engine.settings.lake_url or ""),
                        ("EZ_S3_ENDPOINT_URL", s3.endpoint)):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["snapshot", "--format", "files", "--manifest", str(out)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == snap.files
    assert json.loads(out.read_text())["files"] == snap.files


def test_an_upload_no_batch_committed_is_deleted_after_the_grace_and_nothing_else(s3: S3Server, tmp_path: Path
                                                                                   ) -> None:
    engine = Engine(Settings(data_dir=tmp_path, lake_url=s3.lake_url(), s3_endpoint_url=s3.endpoint,
                             scheduler_enabled=False, lake_grace_seconds=0, lake_orphan_seconds=0),
                    clock=lambda: NOW)
    receipt = engine.ingest_table(BATCHES[0], batch_id="kept")
    objects = engine.infra.lake.objects
    assert objects is not None
    # What a writer that died between its upload and its commit leaves: an object no manifest row names.
    orphan = f"{LOG_RECORDS.folder}/date={FIRST}/part-crashed.parquet"
    objects.storage.put(orphan, objects.storage.get(receipt.files[0]), if_absent=True)
    assert engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == 120  # never read
    engine.compactor.run(NOW)
    assert objects.storage.list(LOG_RECORDS.folder) == list(receipt.files)
    assert engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == 120


def test_counts_stay_exact_while_batches_land_and_compaction_and_the_cleaner_run(s3: S3Server, tmp_path: Path
                                                                                  ) -> None:
    """Readers see every acknowledged batch, never a record twice (small and merged files at once) and never an
    uncommitted upload, while a writer, compaction and the log cleaner all run."""
    import threading

    engine = Engine(Settings(data_dir=tmp_path, lake_url=s3.lake_url(), s3_endpoint_url=s3.endpoint,
                             scheduler_enabled=False, compaction_target_rows=1000, log_retention_days=5,
                             lake_grace_seconds=3600), clock=lambda: NOW)
    old = _batch(FIRST - dt.timedelta(days=3), 50, seed=500)  # past retention once summarized
    engine.ingest_table(old, batch_id="old")
    engine.stats.run_daily(NOW)
    acked = [0]  # records acknowledged so far
    done = threading.Event()
    problems: list[str] = []

    def write() -> None:
        try:
            for i in range(12):
                receipt = engine.ingest_table(_batch(FIRST + dt.timedelta(days=i % 2), 40, seed=600 + i),
                                              batch_id=f"w{i}")
                acked[0] += receipt.records
        finally:
            done.set()

    def maintain() -> None:
        while not done.is_set():
            engine.compactor.run(NOW)
        engine.cleaner.run(NOW)

    threads = [threading.Thread(target=write), threading.Thread(target=maintain)]
    for t in threads:
        t.start()
    while not done.is_set():
        before = acked[0]
        seen = engine.sql(f"SELECT count(*) FROM log_records WHERE date >= DATE '{FIRST}'").column(0)[0].as_py()
        after = acked[0]
        if not before <= seen <= after:
            problems.append(f"read {seen} records while {before}..{after} were acknowledged")
    for t in threads:
        t.join()
    assert problems == []
    # The cleaner dropped the old day; every acknowledged record is there once.
    assert engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == acked[0] == 12 * 40
    engine.compactor.run(NOW)
    objects = engine.infra.lake.objects
    assert objects is not None
    # Nothing left to merge: the batches' files are merged, and merged files wait for four of a size.
    assert len(objects.manifest.live(LOG_RECORDS.folder)) < 12 and engine.compactor.dry_run(NOW).rows == 0
    assert engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == 12 * 40
