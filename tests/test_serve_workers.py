"""`ezstats serve --workers 2`: two processes serve one port over one data dir; every acknowledged batch is
stored once, both processes answer, and each scheduled tick runs once across them, never overlapping."""

from __future__ import annotations

import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from engine import Engine, Settings
from tests.conftest import make_record

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_workers_store_every_batch_once_and_run_each_tick_once(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EZ_DATA_DIR": str(data), "EZ_LOG_LEVEL": "WARNING",
           "EZ_SCHEDULE_ROLLUPS": "2", "EZ_SCHEDULE_ALERT_DETECTOR": "2"}
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", "2"],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "serve --workers 2 did not start"
                time.sleep(0.1)
        bodies = ["\n".join(json.dumps(make_record(k * 100 + i)) for i in range(30)) for k in range(60)]

        def post(k: int) -> tuple[int, str]:
            # A connection per request: the kernel spreads them over both workers' accepts.
            resp = httpx.post(f"{url}/v1/logs", content=bodies[k], headers={"Content-Type": "application/x-ndjson"},
                              timeout=60)
            return resp.status_code, resp.json()["batch_id"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(len(bodies))))
        assert [status for status, _ in answers] == [201] * len(bodies)
        time.sleep(7)  # a few scheduler ticks in both processes
    finally:
        server.terminate()
        server.wait(timeout=60)
    engine = Engine(Settings(data_dir=data, scheduler_enabled=False))
    assert engine.sql("SELECT count(*) n, count(DISTINCT request_id) d FROM log_records").to_pylist() == [
        {"n": 1800, "d": 1800}]
    assert engine.check_lake().ok
    con = sqlite3.connect(data / "ezstats.db")
    ticks = con.execute("SELECT job, due_at, count(*) FROM job_runs WHERE trigger = 'schedule'"
                        " GROUP BY job, due_at HAVING count(*) > 1").fetchall()
    runs = con.execute("SELECT job, started_at, finished_at FROM job_runs WHERE job = 'rollups'"
                       " ORDER BY started_at").fetchall()
    assert ticks == []  # each tick ran once across both workers
    assert len(runs) >= 2 and all(a[2] <= b[1] for a, b in itertools.pairwise(runs))  # never overlapping
