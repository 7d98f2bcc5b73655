"""Webhook channels: Alertmanager's v4 payload, a signature that verifies, nothing lost while the receiver is down,
every event once and in order, dead letters and their re-drive, Retry-After and backoff."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import time

import pytest

from engine import Engine, Settings
from engine.notifications import webhook
from engine.notifications.notifier import backoff_delay
from tests.alert_traffic import NOW, Clock, error_rate_engine, errors_minute, minutes, requests, store
from tests.receivers import Received, Receiver, receiver

SECRET = "whsec-test-0123456789"
NOTIFIED = ("opened", "escalated", "de-escalated", "resolved", "ack_expired")


make_engine = error_rate_engine


def run_at(engine: Engine, clock: Clock, when: dt.datetime):
    """The notifier job at `when`."""
    clock.now = when
    return engine.notifications.run()


def notified_events(engine: Engine) -> list[tuple[int, str, int]]:
    """(event id, kind, alert id) of every lifecycle event a webhook channel with default filters gets, read
    from the alerts themselves."""
    found = []
    for alert in engine.alerts.history.all():
        found += [(e.id, e.kind, alert.id) for e in engine.alerts.get(alert.id).events if e.kind in NOTIFIED]
    return sorted(found)


def received_events(r: Receiver) -> list[tuple[int, str, int]]:
    return [(e["id"], e["kind"], e["alert_id"]) for body in r.bodies() for e in body["events"]]


def test_payload_is_alertmanager_v4_and_its_signature_verifies(tmp_path):
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    with receiver() as r:
        engine.notifications.put_channel("ops", {"type": "webhook", "url": r.url, "secret": SECRET})
        errors_minute(engine, NOW, 80, 20)
        (alert_id,) = engine.alerts.run_once(NOW).opened
        run = run_at(engine, clock, NOW)
        assert (run.events, run.queued, run.messages, run.delivered) == (1, 1, 1, 1)

        (got,) = r.requests
        body = got.json()
        assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
        assert body["truncatedAlerts"] == 0 and body["externalURL"] == "http://127.0.0.1:8000"
        (alert,) = body["alerts"]
        assert alert["status"] == "firing"
        assert alert["labels"] == {"alertname": "error_spike", "severity": "warning", "metric": "error_rate",
                                   "fingerprint": "error_spike:error_rate:key:7", "scope": "key", "key_id": "7",
                                   "master_id": "1", "source": "ezstats"}
        notes = alert["annotations"]
        assert notes["value"] == "0.2" and notes["threshold"] == "0.1" and notes["window"] == "5m"
        assert notes["console"] == f"http://127.0.0.1:8000/admin/alerts/{alert_id}" == alert["generatorURL"]
        assert "error_rate 20.0 %" in notes["summary"] and "key 7 of master 1" in notes["summary"]
        assert alert["startsAt"] == "2026-03-10T12:00:00.000Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
        assert body["commonLabels"] == alert["labels"]
        (event,) = body["events"]
        assert (event["kind"], event["alert_id"], event["severity"]) == ("opened", alert_id, "warning")

        # The signature, recomputed by hand: HMAC-SHA256 of "<t>.<body>" under the secret.
        header = got.headers["x-ezstats-signature"]
        t, v1 = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header).groups()
        assert abs(int(t) - time.time()) < 60
        assert hmac.compare_digest(v1, hmac.new(SECRET.encode(), t.encode() + b"." + got.body,
                                                hashlib.sha256).hexdigest())
        assert got.headers["x-ezstats-event-ids"] == str(event["id"])
        assert got.headers["content-type"] == "application/json"
        # The receiver-side check: valid now; not with another secret, another body, or outside the window.
        assert webhook.verify(SECRET, header, got.body)
        assert not webhook.verify("other", header, got.body)
        assert not webhook.verify(SECRET, header, got.body.replace(b"firing", b"resolved"))
        assert not webhook.verify(SECRET, header, got.body, now=int(t) + webhook.REPLAY_WINDOW + 1)
        assert webhook.verify(SECRET, header, got.body, now=int(t) + webhook.REPLAY_WINDOW)

        # Recovery: one resolved message, with the end.
        for m in range(1, 12):
            errors_minute(engine, NOW + minutes(m), 100, 0)
            clock.now = NOW + minutes(m)
            engine.alerts.run_once(clock.now)
            engine.notifications.run()
        resolved = engine.alerts.get(alert_id)
        assert resolved.status == "resolved"
        assert len(r.requests) == 2
        last = r.requests[-1].json()
        assert last["status"] == "resolved" and last["alerts"][0]["status"] == "resolved"
        assert last["alerts"][0]["endsAt"] == resolved.resolved_at.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        assert [e["kind"] for e in last["events"]] == ["resolved"]
        # Both deliveries are in the alert's history.
        kinds = [(e.kind, e.channel) for e in engine.alerts.get(alert_id).events]
        assert kinds == [("opened", None), ("notified", "ops"), ("resolved", None), ("notified", "ops")]


def _outage_plan(m: int) -> dict[int, tuple[int, int]]:
    """Minute m of an hour: per key, (ok, failed) requests. Key 1 opens, escalates, calms down and resolves;
    key 2 opens at minute 20 and resolves; key 3 opens at minute 45 and is still open at the end."""
    plan = {1: (100, 0), 2: (100, 0), 3: (100, 0)}
    if m < 10:
        plan[1] = (80, 20)
    elif m < 14:
        plan[1] = (50, 50)
    elif m < 18:
        plan[1] = (85, 15)
    if 20 <= m < 26:
        plan[2] = (75, 25)
    if m >= 45:
        plan[3] = (70, 30)
    return plan


@pytest.mark.slow
def test_a_receiver_down_for_an_hour_gets_every_event_once_in_order(tmp_path):
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    r = Receiver()   # down: nothing listens on its port yet
    engine.notifications.put_channel("ops", {"type": "webhook", "url": r.url, "secret": SECRET})
    for m in range(60):
        end = NOW + minutes(m)
        store(engine, *[requests(end, 1, ok, key_id=key) + requests(end, 1, failed, key_id=key, status=500)
                        for key, (ok, failed) in _outage_plan(m).items()])
        for second in (0, 30):   # the notifier job (every 10 s by default; every 30 s is enough here)
            clock.now = NOW + minutes(m) + dt.timedelta(seconds=second)
            if second == 0:
                engine.alerts.run_once(clock.now)
            engine.notifications.run()
    expected = notified_events(engine)
    kinds = [k for _, k, _ in expected]
    assert kinds.count("opened") == 3 and kinds.count("resolved") == 2 and "escalated" in kinds
    assert r.requests == []
    waiting = engine.notifications.deliveries(status="pending").deliveries
    assert len(waiting) == len(expected) and engine.notifications.deliveries(status="dead").deliveries == []
    first = engine.notifications.delivery(min(d.id for d in waiting))
    assert first.attempts > 10 and all(a.status_code is None and "ConnectError" in a.error
                                       for a in first.attempt_log)
    assert all(a.latency_ms is not None for a in first.attempt_log)
    lag = engine.notifications.metrics().outbox_lag_seconds
    assert lag >= 59 * 60

    r.start()   # back after an hour: the backlog arrives within one backoff step, in order, each event once
    try:
        for step in range(1, 50):
            clock.now = NOW + minutes(60) + dt.timedelta(seconds=10 * step)
            engine.notifications.run()
            if not engine.notifications.deliveries(status="pending").deliveries:
                break
        assert clock.now <= NOW + minutes(60) + dt.timedelta(seconds=360)
        got = received_events(r)
        assert got == expected                        # all of them, once each, in event order
        assert all(b["status"] in ("firing", "resolved") for b in r.bodies())
        assert engine.notifications.metrics().outbox_lag_seconds == 0
        for delivery in engine.notifications.deliveries(limit=100).deliveries:
            assert delivery.status == "delivered" and delivery.last_status_code == 200
            log = engine.notifications.delivery(delivery.id).attempt_log
            assert log[-1].outcome == "delivered" and log[-1].status_code == 200
            assert [a.outcome for a in log[:-1]] == ["retry"] * (len(log) - 1)
    finally:
        r.stop()


def test_dead_letter_after_max_attempts_then_redrive(tmp_path, client_for):
    clock = Clock()
    engine = make_engine(tmp_path, clock, notify_max_attempts=3)
    client = client_for(engine)
    r = Receiver()
    engine.notifications.put_channel("ops", {"type": "webhook", "url": r.url, "secret": SECRET})
    errors_minute(engine, NOW, 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    for step in range(30):
        clock.now = NOW + dt.timedelta(seconds=10 * step)
        engine.notifications.run()
    (dead,) = client.get("/admin/notifications/deliveries", params={"status": "dead"}).json()["deliveries"]
    assert dead["attempts"] == 3 and dead["alert_id"] == alert_id and dead["kind"] == "opened"
    assert dead["next_attempt_at"] is None and "ConnectError" in dead["last_error"]
    attempts = client.get(f"/admin/notifications/deliveries/{dead['id']}").json()["attempt_log"]
    assert [a["outcome"] for a in attempts] == ["retry", "retry", "dead"]
    failures = [e for e in client.get(f"/admin/alerts/{alert_id}").json()["events"] if e["kind"] == "notify_failed"]
    assert len(failures) == 2 and "dead-lettered after 3 attempt(s)" in failures[-1]["note"]
    assert failures[-1]["channel"] == "ops" and failures[-1]["delivery_id"] == dead["id"]

    r.start()
    try:
        engine.notifications.run()
        assert r.requests == []                                  # a dead letter waits for a person
        redriven = client.post(f"/admin/notifications/deliveries/{dead['id']}/retry")
        assert redriven.status_code == 200 and redriven.json()["status"] == "pending"
        assert redriven.json()["attempts"] == 0
        engine.notifications.run()
        assert [e["id"] for b in r.bodies() for e in b["events"]] == [dead["event_id"]]
        again = client.post(f"/admin/notifications/deliveries/{dead['id']}/retry")
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
        run_at(engine, clock, clock.now + minutes(5))
        assert len(r.requests) == 1                              # delivered once, never again
        events = client.get(f"/admin/alerts/{alert_id}").json()["events"]
        assert events[-1]["kind"] == "notified" and "HTTP 200" in events[-1]["note"]
    finally:
        r.stop()
    assert client.post("/admin/notifications/deliveries/999999/retry").status_code == 404


def test_a_permanent_refusal_dead_letters_at_once_and_bulk_redrive(tmp_path):
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    answers = {"status": 401}

    def answer(_: Received) -> tuple[int, dict[str, str], bytes]:
        return answers["status"], {}, b'{"error": "bad signature"}'

    with receiver(answer) as r:
        engine.notifications.put_channel("ops", {"type": "webhook", "url": r.url, "secret": SECRET})
        errors_minute(engine, NOW, 80, 20)
        engine.alerts.run_once(NOW)
        run = run_at(engine, clock, NOW)
        assert (run.dead, run.failed) == (1, 0)
        (dead,) = engine.notifications.deliveries(status="dead").deliveries
        assert dead.last_status_code == 401 and dead.last_error == 'HTTP 401: {"error": "bad signature"}'
        answers["status"] = 200
        assert engine.notifications.retry_dead("ops").retried == 1
        assert run_at(engine, clock, NOW).delivered == 1 and len(r.requests) == 2


def test_retry_after_is_respected(tmp_path):
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    answers = [(503, {"Retry-After": "120"}, b"busy")]

    def answer(_: Received) -> tuple[int, dict[str, str], bytes]:
        return answers.pop(0) if answers else (200, {}, b"ok")

    with receiver(answer) as r:
        engine.notifications.put_channel("ops", {"type": "webhook", "url": r.url, "secret": SECRET})
        errors_minute(engine, NOW, 80, 20)
        engine.alerts.run_once(NOW)
        assert run_at(engine, clock, NOW).failed == 1
        (pending,) = engine.notifications.deliveries(status="pending").deliveries
        assert pending.next_attempt_at >= NOW + dt.timedelta(seconds=120)
        assert pending.last_status_code == 503 and pending.last_error == "HTTP 503: busy"
        for seconds in (10, 60, 119):            # the backoff alone would have retried after ~5 s
            run_at(engine, clock, NOW + dt.timedelta(seconds=seconds))
        assert len(r.requests) == 1
        run_at(engine, clock, pending.next_attempt_at)
        assert len(r.requests) == 2 and engine.notifications.deliveries(status="delivered").deliveries


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after():
    low, high = (lambda a, b: a), (lambda a, b: b)
    assert [backoff_delay(n, None, 5, 300, low) for n in (1, 2, 3, 7, 20)] == [4.0, 8.0, 16.0, 240.0, 240.0]
    assert [backoff_delay(n, None, 5, 300, high) for n in (1, 2, 3, 7, 20)] == [6.0, 12.0, 24.0, 360.0, 360.0]
    delays = {backoff_delay(3, None, 5, 300) for _ in range(50)}
    assert len(delays) > 40 and all(16 <= d <= 24 for d in delays)
    assert backoff_delay(1, 90.0, 5, 300, high) == 90.0 and backoff_delay(6, 10.0, 5, 300, low) == 128.0
    # The defaults keep a delivery for at least 96 minutes of failures before it is dead-lettered.
    s = Settings()
    shortest = sum(backoff_delay(n, None, s.notify_backoff_seconds, s.notify_backoff_max_seconds, low)
                   for n in range(1, s.notify_max_attempts))
    assert shortest >= 96 * 60
