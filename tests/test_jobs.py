"""Job runs through the API (`/admin/jobs`), the CLI (`ezstats jobs`, `ezstats scheduler`) and `serve`."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli import app as cli
from engine.settings import get_settings
from tests.conftest import BACKENDS, SQLITE_ONLY, control_backend
from tests.factories import day_records, make_engine, mark_summarized

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def test_admin_jobs_lists_last_and_next_run(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    client = TestClient(create_app(engine=engine))
    before = {j["name"]: j for j in client.get("/admin/jobs").json()}
    assert {"log_cleaner", "compaction", "quota_reset"} <= set(before)
    assert before["log_cleaner"]["last_run"] is None
    # 00:30 today has not run yet: the job is due now.
    assert before["log_cleaner"]["next_run_at"] == "2026-03-10T00:30:00Z"
    ran = client.post("/admin/jobs/log_cleaner/run")
    assert ran.status_code == 200 and ran.json()["outcome"] == "ok" and ran.json()["trigger"] == "manual"
    after = {j["name"]: j for j in client.get("/admin/jobs").json()}
    assert after["log_cleaner"]["last_run"]["run_id"] == ran.json()["run_id"]
    runs = client.get("/admin/jobs/log_cleaner/runs").json()
    assert [r["run_id"] for r in runs] == [ran.json()["run_id"]]
    assert client.post("/admin/jobs/nope/run").status_code == 404
    assert client.get("/admin/jobs/nope/runs").status_code == 404


def test_admin_jobs_needs_the_admin_token(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW, admin_token="s3cret")
    client = TestClient(create_app(engine=engine))
    assert client.get("/admin/jobs").status_code == 401
    assert client.get("/admin/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serve_runs_the_scheduler_and_stops_it(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    with TestClient(create_app(engine=engine, scheduler=True)) as client:
        deadline = dt.datetime.now() + dt.timedelta(seconds=20)
        while dt.datetime.now() < deadline:
            jobs = client.get("/admin/jobs").json()
            if all(j["last_run"] and j["last_run"]["outcome"] != "running" for j in jobs):
                break
            time.sleep(0.05)
        assert all(j["last_run"]["outcome"] == "ok" for j in jobs), jobs
    # The scheduler only starts when asked (tests) or when EZ_SCHEDULER_ENABLED says so (serve). A later tick
    # is due by then (the clock moved), so a scheduler that started would run the jobs again.
    ran = len(engine.jobs.runs(limit=1000))
    later = make_engine(tmp_path, NOW + dt.timedelta(hours=1))
    with TestClient(create_app(engine=later, scheduler=False)) as client:
        time.sleep(0.5)
        assert client.get("/admin/jobs").status_code == 200
        assert len(later.jobs.runs(limit=1000)) == ran


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_jobs_run_list_and_dry_run(cli_env: Path) -> None:
    runner = CliRunner()
    engine = make_engine(cli_env, NOW)
    old = dt.date(2020, 1, 1)
    engine.ingest_table(day_records(old, 10))
    mark_summarized(engine, old)
    dry = runner.invoke(cli, ["jobs", "run", "log-cleaner", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["rows"] == 10 and plan["details"]["days"][0]["action"] == "drop"
    assert (cli_env / "log_records" / "date=2020-01-01").is_dir()  # a dry run changes nothing
    ran = runner.invoke(cli, ["jobs", "run", "log_cleaner", "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["rows"] == 10
    assert not (cli_env / "log_records" / "date=2020-01-01").exists()
    listed = json.loads(runner.invoke(cli, ["jobs", "list", "--json"]).stdout)
    assert next(j for j in listed if j["name"] == "log_cleaner")["last_run"]["outcome"] == "ok"
    runs = json.loads(runner.invoke(cli, ["jobs", "runs", "log_cleaner", "--json"]).stdout)
    assert len(runs) == 1
    assert runner.invoke(cli, ["jobs", "run", "nope"]).exit_code == 3  # not found
    assert runner.invoke(cli, ["jobs", "run", "quota_reset", "--dry-run"]).exit_code == 1  # has no dry run
    assert runner.invoke(cli, ["jobs", "list"]).exit_code == 0


def test_cli_scheduler_once_runs_what_is_due_once(cli_env: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["scheduler", "--once"])
    assert first.exit_code == 0, first.output
    assert runner.invoke(cli, ["scheduler", "--once"]).exit_code == 0
    engine = make_engine(cli_env, NOW)
    jobs = [r.job for r in engine.jobs.runs()]
    # quota_reset ticks every minute, so a second pass may land on a new tick; the others ran once.
    assert jobs.count("log_cleaner") == 1 and jobs.count("compaction") == 1


@pytest.mark.slow
@SQLITE_ONLY  # a process's start and stop; tests/test_replicas.py runs serve processes on PostgreSQL
def test_standalone_scheduler_stops_on_sigterm_after_its_jobs(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "EZ_DATA_DIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", "from cli import app; app()", "scheduler"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engine = make_engine(tmp_path, NOW)
    deadline = time.monotonic() + 30
    wanted = {"log_cleaner", "compaction", "quota_reset"}
    while time.monotonic() < deadline and not wanted <= {r.job for r in engine.jobs.runs()}:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr.read().decode()
    runs = engine.jobs.runs()
    assert {r.job for r in runs} >= {"log_cleaner", "compaction", "quota_reset"}
    assert all(r.outcome == "ok" for r in runs)
