"""Two real `ezstats serve` replicas on one lake (a folder, or an S3 bucket) and one PostgreSQL control store: 8 clients ingest through
both while compaction and the log cleaner run on one; every acked record is stored once and counted by
/admin/stats on both replicas, idempotency keys hold across them, each scheduler tick runs once and no job
overlaps itself."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest
import s3fs

from engine.secretbox import new_key
from tests.conftest import make_record
from tests.postgres_server import PostgresServer
from tests.replicas import replicas
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, S3Server

pytestmark = [pytest.mark.replicas, pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 8
BATCHES = 12      # per client
RECORDS = 40      # per batch
FAST = "2"        # every job ticks every 2 s, on both replicas
JOBS = ("rollups", "daily_stats", "alert_detector", "notifier", "log_cleaner", "compaction", "quota_reset",
        "token_refresh")


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Where the replicas' shared lake is: one folder on this host, or one S3 bucket (SeaweedFS) with a local
    data dir per replica, as replicas on separate hosts have."""
    if request.param == "local":
        return {"EZ_DATA_DIR": str(tmp_path / "data")}
    s3: S3Server = request.getfixturevalue("s3")
    return {"EZ_DATA_DIR": str(tmp_path / "host-{replica}"), "EZ_LAKE_URL": s3.lake_url(),
            "EZ_S3_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
            # Replaced objects outlive the test: a replica reads the files the manifest named when its request
            # began, and with no grace compaction on the other replica could delete one under it.
            "EZ_LAKE_GRACE_SECONDS": "300"}


def _stored(lake: dict[str, str], control: str) -> list[tuple[int, int]]:
    """Count and distinct request ids of the stored records, read without ezstats: the folder's files, or on S3
    the live files the manifest (`lake_files` in PostgreSQL) names, read through s3fs."""
    if "EZ_LAKE_URL" not in lake:
        return duckdb.sql(f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet("
                          f"'{lake['EZ_DATA_DIR']}/log_records/**/*.parquet', hive_partitioning = false)").fetchall()
    with psycopg.connect(control) as con:
        paths = [r[0] for r in con.execute("SELECT path FROM lake_files WHERE removed_at IS NULL"
                                           " AND table_name = 'log_records'").fetchall()]
    root = lake["EZ_LAKE_URL"].removeprefix("s3://").rstrip("/")
    fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=lake["EZ_S3_ENDPOINT_URL"])
    con = duckdb.connect()
    con.register_filesystem(fs)
    files = ", ".join(f"'s3://{root}/{p}'" for p in paths)
    return con.execute(f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet([{files}],"
                       " hive_partitioning = false)").fetchall()


def _ndjson(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_two_replicas_share_one_lake_and_one_postgres(tmp_path: Path, lake: dict[str, str],
                                                      postgres_server: PostgresServer) -> None:
    control = postgres_server.database()
    env = {"EZ_LAKE_GRACE_SECONDS": "0", **lake, "EZ_CONTROL_URL": control, "EZ_SECRET_KEY": new_key(), "EZ_SCHEDULER_ENABLED": "true",
           "EZ_LEASE_SECONDS": "30",
           **{f"EZ_SCHEDULE_{job.upper()}": FAST for job in JOBS}}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with replicas(2, env, tmp_path / "logs") as (one, two):
        acked: list[int] = []
        replayed: list[bool] = []
        errors: list[str] = []

        def client(i: int) -> None:
            rng = random.Random(i)
            with httpx.Client(timeout=60) as http:
                for j in range(BATCHES):
                    records = [make_record(0, request_id=f"c{i}-b{j}-r{k}",
                                           created_at=(now - dt.timedelta(seconds=rng.randrange(3600)))
                                           .isoformat().replace("+00:00", "Z"),
                                           master_id=1 + k % 3, key_id=10 + k % 5)
                               for k in range(RECORDS)]
                    body, key = _ndjson(records), f"client-{i}-batch-{j}"
                    first, second = (one, two) if (i + j) % 2 else (two, one)
                    r = http.post(f"{first.url}/v1/logs", content=body,
                                  headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key})
                    if r.status_code != 201:
                        errors.append(f"{r.status_code} {r.text}")
                        continue
                    acked.append(r.json()["records"])
                    if j % 3 == 0:  # the client retries through the other replica: the key is known there too
                        again = http.post(f"{second.url}/v1/logs", content=body,
                                          headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key})
                        replayed.append(again.is_success and again.headers.get("Idempotent-Replayed") == "true"
                                        and again.json() == r.json())

        def maintenance(stop: threading.Event) -> None:
            with httpx.Client(timeout=60) as http:
                while not stop.is_set():
                    for job in ("compaction", "log_cleaner"):  # on replica one only (409 while a tick runs it)
                        r = http.post(f"{one.url}/admin/jobs/{job}/run")
                        if r.status_code not in (200, 409):
                            errors.append(f"{job}: {r.status_code} {r.text}")
                    stop.wait(0.3)

        stop = threading.Event()
        background = threading.Thread(target=maintenance, args=(stop,))
        background.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        background.join()
        assert not errors, errors[:5]
        assert replayed and all(replayed)
        total = sum(acked)
        assert total == CLIENTS * BATCHES * RECORDS

        # Stored: the live files of the table, read independently of ezstats (each request id once).
        assert _stored(lake, control) == [(total, total)]
        for replica in (one, two):
            answer = httpx.get(f"{replica.url}/admin/stats", params={"period": "all"}, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["totals"]["requests"] == total, replica.url
        ran_compaction = _runs(control, "compaction")
        assert any(r["rows"] for r in ran_compaction), "compaction never merged anything"
        pids = {one.process.pid, two.process.pid}
        deadline = time.monotonic() + 30  # a replica whose scheduler started late may not have won a tick yet
        while _schedulers(control) != pids and time.monotonic() < deadline:
            time.sleep(0.5)

    _each_tick_once_and_no_overlap(control, pids)


def _runs(control: str, job: str | None = None) -> list[dict]:
    with psycopg.connect(control, row_factory=psycopg.rows.dict_row) as con:
        return con.execute("SELECT * FROM job_runs WHERE %s::text IS NULL OR job = %s ORDER BY run_id",
                           (job, job)).fetchall()


def _schedulers(control: str) -> set[int]:
    """The process ids that ran scheduled ticks."""
    return {int(r["owner"].split(":")[1]) for r in _runs(control) if r["trigger"] == "schedule"}


def _each_tick_once_and_no_overlap(control: str, pids: set[int]) -> None:
    runs = _runs(control)
    scheduled = [(r["job"], r["due_at"]) for r in runs if r["trigger"] == "schedule"]
    assert scheduled and [tick for tick, n in Counter(scheduled).items() if n > 1] == []
    # Both replicas took part: ticks were claimed by whichever came first.
    assert _schedulers(control) == pids
    assert all(r["outcome"] == "ok" for r in runs), [(r["job"], r["outcome"], r["error"]) for r in runs
                                                     if r["outcome"] != "ok"][:3]
    for job in JOBS:
        mine = sorted((r for r in runs if r["job"] == job), key=lambda r: r["started_at"])
        for before, after in itertools.pairwise(mine):
            assert after["started_at"] >= before["finished_at"], (job, before, after)
