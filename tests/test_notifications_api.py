"""The channel routes and commands: create, read, replace, delete, test; validation; secrets masked everywhere and
never logged; deliveries listed and re-driven from the CLI; the notifier's figures on /metrics."""

from __future__ import annotations

import json
import logging
import re

import pytest
from typer.testing import CliRunner

from cli import app
from engine import Engine, Settings
from tests.alert_traffic import NOW, Clock, requests, set_thresholds, store
from tests.conftest import ON_BOTH
from tests.receivers import Received, Receiver, receiver

SLACK_PATH = "/services/T0000/B0000/XXXXsecretXXXXtoken"
SECRET = "signing-key-5f2c9e"
runner = CliRunner()


@pytest.fixture
def engine(tmp_path) -> Engine:
    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False), clock=Clock())
    set_thresholds(engine, rate_limit={"enabled": False}, provider_down={"enabled": False},
                   traffic_spike={"enabled": False})
    return engine


def open_alert(engine: Engine, key_id: int = 7) -> int:
    store(engine, requests(NOW, 1, 80, key_id=key_id), requests(NOW, 1, 20, key_id=key_id, status=500))
    (alert_id,) = engine.alerts.run_once(NOW).opened
    return alert_id


@ON_BOTH  # also on the PostgreSQL control store
def test_channel_crud_masks_secrets(engine, client_for):
    client = client_for(engine)
    slack_url = f"https://hooks.slack.example{SLACK_PATH}"
    r = client.put("/admin/notifications/channels/team-slack", json={"type": "slack", "url": slack_url,
                                                                     "types": ["provider_down", "error_spike"]})
    assert r.status_code == 200, r.text
    channel = r.json()
    assert channel["url"] == "https://hooks.slack.example/services/***" and channel["secret_set"] is False
    assert channel["types"] == ["error_spike", "provider_down"] and channel["scopes"] is None
    assert (channel["min_severity"], channel["min_interval_seconds"], channel["notify_acknowledged"]) == (
        "warning", 0, False)

    hook = {"type": "webhook", "url": "https://user:pw-1234@hooks.example/ezstats?token=tok-9876&x=1",
            "secret": SECRET, "min_severity": "critical", "scopes": ["master:12", "provider_key"],
            "min_interval_seconds": 60, "notify_acknowledged": True}
    r = client.put("/admin/notifications/channels/ops", json=hook)
    assert r.status_code == 200, r.text
    assert r.json()["url"] == "https://***@hooks.example/ezstats?token=***&x=***" and r.json()["secret_set"]
    assert r.json()["scopes"] == ["master:12", "provider_key"]
    listed = client.get("/admin/notifications/channels")
    assert [c["name"] for c in listed.json()] == ["ops", "team-slack"]
    for text in (listed.text, client.get("/admin/notifications/channels/ops").text):
        for secret in (SECRET, "pw-1234", "tok-9876", SLACK_PATH):
            assert secret not in text

    # A GET answer sent back as is changes nothing: the masked URL and the omitted secret are kept.
    back = {k: v for k, v in client.get("/admin/notifications/channels/team-slack").json().items()
            if k in ("type", "url", "types")}
    assert client.put("/admin/notifications/channels/team-slack", json=back).status_code == 200
    assert engine.notifications.store.get("team-slack").url == slack_url
    again = client.put("/admin/notifications/channels/ops", json={**hook, "secret": None, "type": "webhook"})
    assert again.status_code == 422 and "secret" in again.json()["detail"]
    kept = {k: v for k, v in hook.items() if k != "secret"}
    assert client.put("/admin/notifications/channels/ops", json=kept).json()["secret_set"] is True
    assert engine.notifications.store.get("ops").secret == SECRET

    assert client.delete("/admin/notifications/channels/ops").status_code == 204
    missing = client.get("/admin/notifications/channels/ops")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert client.delete("/admin/notifications/channels/ops").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "pager", "url": "http://x"}, "type"),
    ({"type": "webhook", "url": "ftp://x", "secret": "s"}, "url"),
    ({"type": "webhook", "url": "http://x"}, "secret"),
    ({"type": "slack", "url": "http://x", "secret": "s"}, "secret"),
    ({"type": "alertmanager", "url": "http://x", "types": ["error_spike", "bogus"]}, "types"),
    ({"type": "alertmanager", "url": "http://x", "types": []}, "types"),
    ({"type": "alertmanager", "url": "http://x", "scopes": ["tenant:4"]}, "scopes"),
    ({"type": "alertmanager", "url": "http://x", "scopes": ["global:1"]}, "scopes"),
    ({"type": "alertmanager", "url": "http://x", "min_severity": "info"}, "min_severity"),
    ({"type": "alertmanager", "url": "http://x", "min_interval_seconds": -1}, "min_interval_seconds"),
    ({"type": "alertmanager", "url": "http://x", "colour": "red"}, "colour"),
])
def test_invalid_channels_are_refused_naming_the_field(engine, client_for, body, field):
    r = engine and client_for(engine).put("/admin/notifications/channels/x", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert field in r.json()["detail"]
    assert engine.notifications.list_channels() == []


def test_a_bad_channel_name_is_refused(engine, client_for):
    r = client_for(engine).put("/admin/notifications/channels/a%20b", json={"type": "alertmanager", "url": "http://x"})
    assert r.status_code == 422 and "path.name" in r.json()["detail"]


def test_test_route_answers_the_receivers_response(engine, client_for):
    client = client_for(engine)
    with receiver(lambda _: (202, {}, b"accepted, thanks")) as r:
        client.put("/admin/notifications/channels/ops", json={"type": "webhook", "url": r.url, "secret": SECRET})
        answer = client.post("/admin/notifications/channels/ops/test").json()
        assert (answer["ok"], answer["status_code"], answer["response"], answer["error"]) == (
            True, 202, "accepted, thanks", None)
        (got,) = r.requests
        body = got.json()
        assert body["alerts"][0]["labels"]["alertname"] == "ezstats_test" and body["events"] == []
        assert body["alerts"][0]["labels"]["test"] == "true"
    down = client.post("/admin/notifications/channels/ops/test").json()   # the receiver is gone now
    assert down["ok"] is False and down["status_code"] is None and "ConnectError" in down["error"]
    assert engine.notifications.deliveries().deliveries == []          # a test is not a delivery
    assert client.post("/admin/notifications/channels/nope/test").status_code == 404


def test_secrets_are_never_logged_nor_answered_in_errors(engine, client_for, caplog):
    caplog.set_level(logging.DEBUG)
    client = client_for(engine)

    def refuse(got: Received) -> tuple[int, dict[str, str], bytes]:
        return 500, {}, f"no such hook {got.path}".encode()   # a receiver echoing the secret path back

    with receiver(refuse) as r:
        slack_url = f"http://127.0.0.1:{r.port}{SLACK_PATH}"
        client.put("/admin/notifications/channels/team", json={"type": "slack", "url": slack_url})
        client.put("/admin/notifications/channels/ops", json={"type": "webhook", "url": r.url, "secret": SECRET})
        client.put("/admin/notifications/channels/am", json={"type": "alertmanager", "url": r.url + "?token=tok-9876",
                                                             "secret": "bearer-xyz"})
        open_alert(engine)
        run = engine.notifications.run()
        assert run.failed == 3 and len(r.requests) == 3
        assert r.requests[0].path in (SLACK_PATH, "/hook", "/hook/api/v2/alerts?token=tok-9876")
        bearer = next(q for q in r.requests if q.path.startswith("/hook/api"))
        assert bearer.headers["authorization"] == "Bearer bearer-xyz"   # sent, but never shown
        test = client.post("/admin/notifications/channels/team/test").json()
        texts = [caplog.text, test["error"] or "", test["response"], client.get("/metrics").text,
                 client.get("/admin/notifications/deliveries").text, client.get("/admin/alerts/1").text,
                 client.get("/admin/notifications/channels").text]
    for text in texts:
        for secret in (SLACK_PATH, "XXXXsecretXXXXtoken", SECRET, "tok-9876", "bearer-xyz"):
            assert secret not in text
    assert "no such hook ***" in test["response"]


@ON_BOTH  # also on the PostgreSQL control store
def test_metrics_count_deliveries_by_channel_and_outcome_and_show_the_lag(engine, client_for):
    client = client_for(engine)
    with receiver() as r:
        engine.notifications.put_channel("ops", {"type": "webhook", "url": r.url, "secret": SECRET})
        engine.notifications.put_channel("down", {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": SECRET})
        open_alert(engine, 7)
        open_alert(engine, 8)
        assert 'ezstats_notification_outbox_lag_seconds 0.0' in client.get("/metrics").text  # clock at NOW
        engine.clock.now = NOW.replace(minute=2)          # two minutes after the events
        text = client.get("/metrics").text
        assert "ezstats_notification_outbox_lag_seconds 120.0" in text
        engine.notifications.run()
    text = client.get("/metrics").text
    assert 'ezstats_notification_deliveries_total{channel="ops",outcome="delivered"} 2.0' in text
    assert 'ezstats_notification_deliveries_total{channel="down",outcome="failed"} 2.0' in text
    assert 'ezstats_notification_deliveries_total{channel="down",outcome="delivered"} 0.0' in text
    assert 'ezstats_notification_pending{channel="down"} 2.0' in text
    assert 'ezstats_notification_pending{channel="ops"} 0.0' in text
    assert "ezstats_notification_outbox_lag_seconds 120.0" in text          # "down" still waits
    assert "ezstats_ingest_records_accepted_total" in text and "http_requests_total" in text


def test_cli_channels_and_deliveries(engine, cli_env):
    r = Receiver()
    result = runner.invoke(app, ["notify", "channels", "set", "ops", "--type", "webhook", "--url", r.url,
                                 "--secret", "-", "--alert-type", "error_spike", "--scope", "key", "--json"],
                           input=SECRET + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["secret_set"] is True and SECRET not in result.output
    assert engine.notifications.store.get("ops").secret == SECRET
    listed = runner.invoke(app, ["notify", "channels", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["types"] == ["error_spike"]
    assert runner.invoke(app, ["notify", "channels", "list"]).exit_code == 0
    bad = runner.invoke(app, ["notify", "channels", "set", "x", "--type", "webhook", "--url", r.url])
    assert bad.exit_code == 1 and "secret" in bad.output

    down = runner.invoke(app, ["notify", "channels", "test", "ops"])
    assert down.exit_code == 1 and "ConnectError" in down.output
    open_alert(engine)
    engine.notifications.run()
    failing = runner.invoke(app, ["notify", "deliveries", "list", "--status", "pending", "--json"])
    (pending,) = json.loads(failing.stdout)["deliveries"]
    shown = runner.invoke(app, ["notify", "deliveries", "show", str(pending["id"]), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["attempt_log"][0]["outcome"] == "retry"
    assert runner.invoke(app, ["notify", "deliveries", "show", str(pending["id"])]).exit_code == 0
    assert runner.invoke(app, ["notify", "deliveries", "show", "999"]).exit_code == 3
    assert runner.invoke(app, ["notify", "deliveries", "retry"]).exit_code == 1
    r.start()
    try:
        ok = runner.invoke(app, ["notify", "channels", "test", "ops", "--json"])
        assert ok.exit_code == 0 and json.loads(ok.stdout)["status_code"] == 200
        assert runner.invoke(app, ["notify", "deliveries", "retry", str(pending["id"])]).exit_code == 0
        assert runner.invoke(app, ["jobs", "run", "notifier"]).exit_code == 0
        assert len([q for q in r.requests if q.json()["events"]]) == 1
        assert runner.invoke(app, ["notify", "deliveries", "retry", str(pending["id"])]).exit_code == 4
        assert runner.invoke(app, ["notify", "deliveries", "retry", "--dead", "--json"]).stdout.strip().startswith("{")
    finally:
        r.stop()
    assert runner.invoke(app, ["notify", "channels", "delete", "ops"]).exit_code == 0
    assert runner.invoke(app, ["notify", "channels", "delete", "ops"]).exit_code == 3
    assert re.search(r"no notification channel", runner.invoke(app, ["notify", "channels", "test", "ops"]).output)


@ON_BOTH  # also on the PostgreSQL control store
def test_channel_secrets_are_encrypted_at_rest_and_rotate_with_the_key(tmp_path):
    from engine.secretbox import new_key

    old, new = new_key(), new_key()
    data = tmp_path / "data"
    engine = Engine(Settings(data_dir=data, scheduler_enabled=False, secret_key=old))
    slack_url = "https://hooks.slack.example/services/T000/B000/slack-url-secret-part"
    engine.notifications.put_channel("hook", {"type": "webhook", "url": "http://127.0.0.1:9/x",
                                              "secret": "webhook-signing-secret-value"})
    engine.notifications.put_channel("chat", {"type": "slack", "url": slack_url})
    raw = b"".join(p.read_bytes() for p in data.glob("ezstats.db*"))  # the WAL included
    assert b"webhook-signing-secret-value" not in raw and b"slack-url-secret-part" not in raw
    # The new key first, the old one still there to decrypt: rotate, then the old key can go.
    rotated = Engine(Settings(data_dir=data, scheduler_enabled=False, secret_key=f"{new},{old}"))
    assert rotated.rotate_secret_key() == {"credentials": 0, "channels": 2}
    alone = Engine(Settings(data_dir=data, scheduler_enabled=False, secret_key=new))
    assert {c.name: c.url for c in alone.notifications.store.all()}["chat"] == slack_url
    assert alone.notifications.store.get("hook").secret == "webhook-signing-secret-value"
