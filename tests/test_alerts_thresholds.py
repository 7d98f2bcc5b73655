"""Thresholds: defaults, validation field by field, versioned store, API (ETag/If-Match) and CLI."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from engine import Engine, Settings
from engine.alerts.thresholds import Thresholds
from engine.errors import InvalidParameter, PreconditionFailed
from tests.conftest import ON_BOTH

DEFAULTS = {
    "cooldown_minutes": 5,
    "recovery_ratio": 0.8,
    "recovery_evaluations": 3,
    "rate_limit": {"enabled": True, "window_minutes": 5, "min_samples": 20, "min_count": 10, "warning": 0.1,
                   "critical": 0.3},
    "error_spike": {"enabled": True, "window_minutes": 5, "min_samples": 20, "warning": 0.1, "critical": 0.25},
    "provider_down": {"enabled": True, "window_minutes": 5, "min_samples": 10, "warning": 0.5, "critical": 0.9},
    "quota_exceeded": {"enabled": True, "warning": 0.9, "critical": 1.0},
    "traffic_spike": {"enabled": True, "window_minutes": 1, "min_samples": 10, "global_qps": 250.0,
                      "master_rpm": 3000, "master_tpm": 6_000_000, "master_rpd": 2_500_000,
                      "master_tpd": 5_000_000_000, "critical_factor": 2.0, "surge_factor": 4.0,
                      "surge_window_minutes": 5, "surge_baseline_minutes": 180, "surge_min_samples": 30,
                      "overrides": {}},
}


@pytest.fixture
def engine(tmp_path):
    return Engine(Settings(data_dir=tmp_path))


def test_defaults_are_the_seed_and_spec_values():
    assert Thresholds().model_dump(mode="json") == DEFAULTS


def test_first_read_creates_row_one_with_defaults(engine):
    stored = engine.alerts.read_thresholds()
    assert stored.version == 1 and stored.updated_by == "defaults"
    assert stored.thresholds == Thresholds()
    with engine.store.connect() as con:
        assert [tuple(r) for r in con.execute("SELECT id, version FROM alert_thresholds")] == [(1, 1)]


# Every rule of the issue, one field at a time: (path, bad value, words the message must hold).
INVALID = [
    (("error_spike", "warning"), 0, "greater than 0"),
    (("error_spike", "warning"), 1.5, "less than or equal to 1"),
    (("error_spike", "critical"), -0.1, "greater than 0"),
    (("rate_limit", "warning"), 0.0, "greater than 0"),
    (("provider_down", "critical"), 2, "less than or equal to 1"),
    (("quota_exceeded", "warning"), 1.01, "less than or equal to 1"),
    (("error_spike", "window_minutes"), 0, "greater than or equal to 1"),
    (("error_spike", "window_minutes"), 1.5, "valid integer"),
    (("rate_limit", "window_minutes"), "5", "valid integer"),
    (("provider_down", "window_minutes"), 1441, "less than or equal to 1440"),
    (("traffic_spike", "window_minutes"), 0.5, "valid integer"),
    (("error_spike", "min_samples"), 0, "greater than or equal to 1"),
    (("rate_limit", "min_samples"), -3, "greater than or equal to 1"),
    (("rate_limit", "min_count"), 0, "greater than or equal to 1"),
    (("provider_down", "min_samples"), 2.0, "valid integer"),
    (("traffic_spike", "min_samples"), 0, "greater than or equal to 1"),
    (("traffic_spike", "global_qps"), 0, "greater than 0"),
    (("traffic_spike", "master_rpm"), 0, "greater than or equal to 1"),
    (("traffic_spike", "master_tpd"), 1.5, "valid integer"),
    (("traffic_spike", "critical_factor"), 0.5, "greater than or equal to 1"),
    (("traffic_spike", "surge_factor"), 1.0, "greater than 1"),
    (("traffic_spike", "surge_window_minutes"), 2.5, "valid integer"),
    (("traffic_spike", "surge_baseline_minutes"), 0, "greater than or equal to 1"),
    (("traffic_spike", "surge_min_samples"), 0, "greater than or equal to 1"),
    (("cooldown_minutes",), -1, "greater than or equal to 0"),
    (("cooldown_minutes",), 2.5, "valid integer"),
    (("recovery_ratio",), 1.0, "less than 1"),
    (("recovery_ratio",), 0, "greater than 0"),
    (("recovery_evaluations",), 0, "greater than or equal to 1"),
    (("error_spike", "enabled"), "yes", "boolean"),
    (("error_spike", "bogus"), 1, "Extra inputs are not permitted"),
    (("bogus",), 1, "Extra inputs are not permitted"),
    (("traffic_spike", "overrides"), {"x": {}}, "valid integer"),
    (("traffic_spike", "overrides"), {"7": {"master_rpm": 0}}, "greater than or equal to 1"),
    (("traffic_spike", "overrides"), {"7": {"rpm": 5}}, "Extra inputs are not permitted"),
]


def _with(path: tuple[str, ...], value: object) -> dict:
    body = json.loads(json.dumps(DEFAULTS))
    node = body
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return body


@pytest.mark.parametrize(("path", "value", "words"), INVALID, ids=lambda v: str(v))
def test_each_field_is_validated(path, value, words):
    with pytest.raises(InvalidParameter) as info:
        Thresholds.parse(_with(path, value))
    message = str(info.value)
    assert ".".join(path) in message and words in message


@pytest.mark.parametrize("rule", ["rate_limit", "error_spike", "provider_down", "quota_exceeded"])
def test_critical_below_warning_is_refused(rule):
    body = _with((rule, "warning"), 0.5)
    body[rule]["critical"] = 0.4
    with pytest.raises(InvalidParameter, match=r"critical \(0.4\) must be >= warning \(0.5\)"):
        Thresholds.parse(body)


def test_boundaries_accepted():
    body = _with(("error_spike", "warning"), 1)
    body["error_spike"]["critical"] = 1.0
    body["cooldown_minutes"] = 0
    body["traffic_spike"]["overrides"] = {"7": {"master_rpm": 5}}
    parsed = Thresholds.parse(body)
    assert parsed.error_spike.warning == 1.0 and parsed.traffic_spike.limit("master_rpm", 7) == 5
    assert parsed.traffic_spike.limit("master_rpm", 8) == 3000
    assert parsed.traffic_spike.limit("master_tpm", 7) == 6_000_000  # an override keeps what it leaves out


def test_update_bumps_version_and_refuses_a_stale_one(engine):
    first = engine.alerts.read_thresholds()
    second = engine.alerts.update_thresholds(_with(("error_spike", "warning"), 0.2), if_match=first.version)
    assert second.version == 2 and second.thresholds.error_spike.warning == 0.2
    with pytest.raises(PreconditionFailed, match="version 2, not 1"):
        engine.alerts.update_thresholds(DEFAULTS, if_match=1)
    assert engine.alerts.read_thresholds().thresholds.error_spike.warning == 0.2


def test_invalid_update_changes_nothing(engine):
    with pytest.raises(InvalidParameter):
        engine.alerts.update_thresholds(_with(("recovery_ratio",), 2.0), if_match=1)
    assert engine.alerts.read_thresholds().version == 1


@ON_BOTH  # also on the PostgreSQL control store
def test_concurrent_updates_with_the_same_version_one_wins(tmp_path):
    outcomes: list[str] = []

    def update(i: int) -> None:
        engine = Engine(Settings(data_dir=tmp_path))
        try:
            engine.alerts.update_thresholds(_with(("cooldown_minutes",), i), if_match=1)
            outcomes.append("ok")
        except PreconditionFailed:
            outcomes.append("412")

    Engine(Settings(data_dir=tmp_path)).alerts.read_thresholds()
    threads = [threading.Thread(target=update, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["412"] * 5 + ["ok"]
    assert Engine(Settings(data_dir=tmp_path)).alerts.read_thresholds().version == 2


@ON_BOTH  # also on the PostgreSQL control store
def test_api_get_put_with_etag_and_if_match(engine):
    client = TestClient(create_app(engine=engine))
    got = client.get("/admin/alerts/thresholds")
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert got.json()["thresholds"] == DEFAULTS and got.json()["version"] == 1

    body = _with(("provider_down", "warning"), 0.6)
    assert client.put("/admin/alerts/thresholds", json=body).status_code == 428
    stale = client.put("/admin/alerts/thresholds", json=body, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
    ok = client.put("/admin/alerts/thresholds", json=body, headers={"If-Match": got.headers["etag"]})
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'
    assert ok.json()["thresholds"]["provider_down"]["warning"] == 0.6
    again = client.put("/admin/alerts/thresholds", json=body, headers={"If-Match": got.headers["etag"]})
    assert again.status_code == 412


@pytest.mark.parametrize(("path", "value", "words"), INVALID[::4], ids=lambda v: str(v))
def test_api_refuses_invalid_fields_with_problem_json(engine, path, value, words):
    client = TestClient(create_app(engine=engine))
    r = client.put("/admin/alerts/thresholds", json=_with(path, value), headers={"If-Match": '"1"'})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert path[-1] in r.text
    assert engine.alerts.read_thresholds().version == 1


def test_api_cross_field_rule_is_problem_json(engine):
    client = TestClient(create_app(engine=engine))
    body = _with(("error_spike", "critical"), 0.05)
    r = client.put("/admin/alerts/thresholds", json=body, headers={"If-Match": '"1"'})
    assert r.status_code == 422 and "must be >= warning" in r.json()["detail"]


def test_admin_token_is_required(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path, admin_token="s3cret"))
    client = TestClient(create_app(engine=engine))
    assert client.get("/admin/alerts/thresholds").status_code == 401
    r = client.get("/admin/alerts/thresholds", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200


def test_cli_prints_and_sets_thresholds(tmp_path, monkeypatch):
    from cli import app
    from engine.settings import get_settings

    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    shown = runner.invoke(app, ["alerts", "thresholds"])
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert printed["version"] == 1 and printed["thresholds"] == DEFAULTS
    printed["thresholds"]["error_spike"]["min_samples"] = 50
    path = tmp_path / "t.json"
    path.write_text(json.dumps(printed))
    stored = runner.invoke(app, ["alerts", "thresholds", "--set", str(path), "--if-match", "1"])
    assert stored.exit_code == 0, stored.output
    assert json.loads(stored.stdout)["thresholds"]["error_spike"]["min_samples"] == 50
    stale = runner.invoke(app, ["alerts", "thresholds", "--set", str(path), "--if-match", "1"])
    assert stale.exit_code == 4 and "version 2, not 1" in stale.output  # a conflict (stale version)
    path.write_text(json.dumps({"error_spike": {"warning": 3}}))
    bad = runner.invoke(app, ["alerts", "thresholds", "--set", str(path)])
    assert bad.exit_code == 1 and "error_spike.warning" in bad.output
    get_settings.cache_clear()
