"""`ezstats stats`, `ezstats backfill`, `ezstats daily-stats` through the real CLI."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from cli import app
from engine import Engine, Settings
from engine.settings import get_settings
from engine.times import midnight
from tests.stats_oracle import expected, frame
from tests.stats_records import records

FIRST, LAST = dt.date(2025, 6, 1), dt.date(2025, 6, 4)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("EZ_DATA_DIR", str(data))
    get_settings.cache_clear()
    table = records(2000, 8, midnight(FIRST), midnight(LAST + dt.timedelta(days=1)))
    Engine(Settings(data_dir=data)).ingest_table(table)
    yield CliRunner(), data, frame(table)
    get_settings.cache_clear()


def test_backfill_writes_every_day_and_is_idempotent(cli):
    runner, _, _ = cli
    args = ["backfill", "--from", FIRST.isoformat(), "--to", LAST.isoformat(), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    body = json.loads(first.stdout)
    assert [d["daily"] for d in body["days"]] == ["written"] * 4 and body["failed"] == []
    again = json.loads(runner.invoke(app, args).stdout)
    assert [d["daily"] for d in again["days"]] == ["kept"] * 4


def test_backfill_reports_a_failed_day_and_exits_1(cli):
    runner, data, _ = cli
    (data / "log_records" / "date=2025-06-02" / "bad.parquet").write_bytes(b"not parquet")
    result = runner.invoke(app, ["backfill", "--from", FIRST.isoformat(), "--to", LAST.isoformat()])
    assert result.exit_code == 1
    assert "2025-06-02" in result.stderr and "1 failed" in result.stderr


def test_backfill_rejects_a_reversed_range(cli):
    runner, _, _ = cli
    result = runner.invoke(app, ["backfill", "--from", "2025-06-04", "--to", "2025-06-01"])
    assert result.exit_code == 1 and "after" in result.stderr


def test_stats_json_matches_recomputation(cli):
    runner, _, df = cli
    result = runner.invoke(app, ["stats", "--period", "custom", "--from", "2025-06-02", "--to", "2025-06-03",
                                 "--group-by", "provider", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    want = expected(df, midnight(dt.date(2025, 6, 2)), midnight(dt.date(2025, 6, 4)), "provider")
    assert {g["group"]: g["requests"] for g in body["groups"]} == {k: v["requests"] for k, v in want.items()}
    assert body["percentiles"] == "exact"  # nothing rolled up yet: every hour read raw


def test_stats_table_and_bad_period(cli):
    runner, _, _ = cli
    table = runner.invoke(app, ["stats", "--period", "all", "--group-by", "model"])
    assert table.exit_code == 0 and "requests" in table.stdout and "top models" in table.stdout
    bad = runner.invoke(app, ["stats", "--period", "yesterday"])
    assert bad.exit_code == 1 and "unknown period" in bad.stderr


def test_daily_stats_runs_the_job_now(cli):
    runner, data, _ = cli
    result = runner.invoke(app, ["daily-stats", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"written": 4, "late_days": []}
    assert len(list((data / "daily_stats").glob("*/*.parquet"))) == 4
