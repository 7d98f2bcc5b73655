"""`ezstats alerts ...` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from engine import Engine, Settings
from engine.settings import get_settings
from tests.alert_traffic import NOW, minutes, requests, store


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    engine = Engine(Settings(data_dir=tmp_path))
    store(engine, requests(NOW, 5, 80, key_id=7), requests(NOW, 5, 20, key_id=7, status=500))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()


def test_detect_list_show_ack_resolve_stats(cli):
    detected = cli("alerts", "detect", "--at", "2026-03-10T12:00:00Z", "--json")
    assert detected.exit_code == 0, detected.output
    (alert_id,) = json.loads(detected.stdout)["opened"]
    again = cli("alerts", "detect", "--at", "2026-03-10T12:01:00Z")
    assert again.exit_code == 0 and "0 opened" in again.output

    listed = json.loads(cli("alerts", "list", "--status", "open", "--json").stdout)
    assert [a["id"] for a in listed["alerts"]] == [alert_id] and listed["next_cursor"] is None
    table = cli("alerts", "list")
    assert table.exit_code == 0 and f"│ {alert_id} " in table.stdout   # a table for people

    acked = cli("alerts", "ack", str(alert_id), "--note", "on it", "--expires", "2099-01-01T00:00:00Z", "--json")
    assert acked.exit_code == 0 and json.loads(acked.stdout)["status"] == "acknowledged"
    resolved = cli("alerts", "resolve", str(alert_id), "--note", "done")
    assert resolved.exit_code == 0
    shown = cli("alerts", "show", str(alert_id))
    assert [k in shown.stdout for k in ("opened", "acknowledged", "resolved")] == [True] * 3
    assert cli("alerts", "resolve", str(alert_id)).exit_code == 4   # a conflict: already resolved
    assert cli("alerts", "show", "999").exit_code == 3                # not found

    stats = json.loads(cli("alerts", "stats", "--since", "2026-03-10T00:00:00Z",
                           "--until", "2026-03-11T00:00:00Z").stdout)
    assert stats["total"] == 1 and stats["by_status"]["resolved"] == 1


@pytest.mark.parametrize("args", [
    ("alerts", "detect", "--at", "noon"),
    ("alerts", "detect", "--at", "2026-03-10T12:00:00"),          # no offset
    ("alerts", "list", "--type", "nope"),
    ("alerts", "preview", "--from", "2026-03-10", "--to", "2026-03-01"),
    ("alerts", "preview", "--from", "yesterday", "--to", "2026-03-01"),
])
def test_bad_arguments_exit_non_zero(cli, args):
    result = cli(*args)
    assert result.exit_code != 0 and "error" in result.output


def test_every_alerts_command_has_help_with_an_example(cli):
    for command in ("detect", "list", "show", "ack", "resolve", "stats", "thresholds", "preview"):
        result = cli("alerts", command, "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout, command


def test_detect_replays_history_minute_by_minute(cli):
    for m in range(0, 12):
        assert cli("alerts", "detect", "--at", (NOW + minutes(m)).isoformat()).exit_code == 0
    listed = json.loads(cli("alerts", "list", "--json").stdout)["alerts"]
    assert len(listed) == 1 and listed[0]["status"] == "open"   # no data after 12:05: never counts as recovered
