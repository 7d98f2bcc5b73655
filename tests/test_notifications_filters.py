"""What each channel is sent: severity, type and scope filters, acknowledged alerts, the minimum interval and its
grouping, no message for flapping below the hysteresis, and Slack's Block Kit message."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest

from engine import Engine
from tests.alert_traffic import NOW, Clock, error_rate_engine, errors_minute, minutes
from tests.receivers import Receiver, receiver

SECRET = "k"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path, clock) -> Engine:
    return error_rate_engine(tmp_path, clock)


def step(engine: Engine, clock: Clock, at: dt.datetime) -> None:
    """One scheduler minute: the detector, then the notifier."""
    clock.now = at
    engine.alerts.run_once(at)
    engine.notifications.run()


def kinds(r: Receiver) -> list[str]:
    return [e["kind"] for body in r.bodies() for e in body["events"]]


def hook(engine: Engine, name: str, r: Receiver, **fields: object) -> None:
    engine.notifications.put_channel(name, {"type": "webhook", "url": r.url + "/" + name, "secret": SECRET, **fields})


def per_channel(r: Receiver, name: str) -> list[dict]:
    return [q.json() for q in r.requests if q.path.endswith("/" + name)]


def test_min_severity_shows_only_the_critical_part(engine, clock):
    with receiver() as r:
        hook(engine, "all", r)
        hook(engine, "critical", r, min_severity="critical")
        errors_minute(engine, NOW, 80, 20)                    # 20 %: warning
        step(engine, clock, NOW)
        errors_minute(engine, NOW + minutes(1), 40, 60)       # 40 % over the window: critical
        step(engine, clock, NOW + minutes(1))
        errors_minute(engine, NOW + minutes(2), 300, 0)       # 16 %: warning again
        step(engine, clock, NOW + minutes(2))
        for m in range(3, 12):
            errors_minute(engine, NOW + minutes(m), 300, 0)
            step(engine, clock, NOW + minutes(m))
        everything = [e["kind"] for b in per_channel(r, "all") for e in b["events"]]
        assert everything == ["opened", "escalated", "de-escalated", "resolved"]
        critical = per_channel(r, "critical")
        assert [e["kind"] for b in critical for e in b["events"]] == ["escalated", "de-escalated"]
        # The critical channel saw it fire at critical, then end there; it never heard of the warning.
        assert [(a["status"], a["labels"]["severity"]) for b in critical for a in b["alerts"]] == [
            ("firing", "critical"), ("resolved", "critical")]
        states = [(a["status"], a["labels"]["severity"]) for b in per_channel(r, "all") for a in b["alerts"]]
        assert states == [("firing", "warning"), ("resolved", "warning"), ("firing", "critical"),
                          ("resolved", "critical"), ("firing", "warning"), ("resolved", "warning")]


def test_type_and_scope_filters(engine, clock):
    engine.registry.sync({"keys": [{"key_id": 8, "master_id": 2}]})
    with receiver() as r:
        hook(engine, "master2", r, scopes=["master:2"])
        hook(engine, "keys", r, scopes=["key"], types=["error_spike"])
        hook(engine, "providers", r, types=["provider_down"])
        hook(engine, "key7", r, scopes=["key:7", "provider_key:3"])
        errors_minute(engine, NOW, 80, 20, key_id=7, master_id=1)
        errors_minute(engine, NOW, 70, 30, key_id=8, master_id=2)
        step(engine, clock, NOW)
        assert [a["labels"]["key_id"] for b in per_channel(r, "master2") for a in b["alerts"]] == ["8"]
        assert sorted(a["labels"]["key_id"] for b in per_channel(r, "keys") for a in b["alerts"]) == ["7", "8"]
        assert per_channel(r, "providers") == []
        assert [a["labels"]["key_id"] for b in per_channel(r, "key7") for a in b["alerts"]] == ["7"]


def test_acknowledged_alerts_are_quiet_until_they_escalate(engine, clock):
    with receiver() as r:
        hook(engine, "quiet", r)
        hook(engine, "loud", r, notify_acknowledged=True)
        errors_minute(engine, NOW, 80, 20)
        step(engine, clock, NOW)
        (alert,) = engine.alerts.list_alerts().alerts
        engine.alerts.ack(alert.id, "ana", "on it", NOW + minutes(3))
        errors_minute(engine, NOW + minutes(1), 40, 60)        # escalates while acknowledged: both hear it
        step(engine, clock, NOW + minutes(1))
        errors_minute(engine, NOW + minutes(2), 300, 0)        # de-escalates while acknowledged
        step(engine, clock, NOW + minutes(2))
        errors_minute(engine, NOW + minutes(3), 300, 0)        # the acknowledgement expires: both hear it
        step(engine, clock, NOW + minutes(3))
        assert [e.kind for e in engine.alerts.get(alert.id).events if e.kind != "notified"] == [
            "opened", "acknowledged", "escalated", "de-escalated", "ack_expired"]
        quiet = [e["kind"] for b in per_channel(r, "quiet") for e in b["events"]]
        loud = [e["kind"] for b in per_channel(r, "loud") for e in b["events"]]
        assert quiet == ["opened", "escalated", "ack_expired"]
        assert loud == ["opened", "acknowledged", "escalated", "de-escalated", "ack_expired"]
        # Quiet missed the de-escalation, so its re-notification still ends the critical and fires the warning.
        last = per_channel(r, "quiet")[-1]["alerts"]
        assert [(a["status"], a["labels"]["severity"]) for a in last] == [("resolved", "critical"),
                                                                         ("firing", "warning")]


def test_min_interval_groups_events_into_one_message(engine, clock):
    with receiver() as r:
        hook(engine, "grouped", r, min_interval_seconds=300)
        hook(engine, "each", r)
        for m, (ok, bad) in enumerate([(80, 20), (40, 60), (300, 0)]):
            errors_minute(engine, NOW + minutes(m), ok, bad)
            step(engine, clock, NOW + minutes(m))
        each = [e["kind"] for b in per_channel(r, "each") for e in b["events"]]
        assert each == ["opened", "escalated", "de-escalated"] and len(per_channel(r, "each")) == 3
        assert len(per_channel(r, "grouped")) == 1               # held back by the interval
        clock.now = NOW + minutes(5) - dt.timedelta(seconds=1)
        engine.notifications.run()
        assert len(per_channel(r, "grouped")) == 1
        clock.now = NOW + minutes(5)
        engine.notifications.run()
        grouped = per_channel(r, "grouped")
        assert len(grouped) == 2 and [e["kind"] for e in grouped[1]["events"]] == each[1:]
        # One entry per severity the alert showed, not one per event: it ended at critical and fires at warning.
        assert [(a["status"], a["labels"]["severity"]) for a in grouped[1]["alerts"]] == [
            ("resolved", "critical"), ("firing", "warning")]


def test_one_message_per_evaluation_for_several_alerts(engine, clock):
    with receiver() as r:
        hook(engine, "ops", r)
        for key in range(1, 6):
            errors_minute(engine, NOW, 70, 30, key_id=key)
        step(engine, clock, NOW)
        (body,) = r.bodies()
        assert len(body["alerts"]) == 5 and len(body["events"]) == 5 and body["commonLabels"]["alertname"] == \
            "error_spike"


def window_rates(errors: list[int], per_minute: int = 100) -> list[float]:
    """The error rate each evaluation sees: the last 5 minutes of per-minute error counts."""
    return [sum(errors[max(0, k - 4):k + 1]) / (per_minute * min(k + 1, 5)) for k in range(len(errors))]


def test_no_message_for_flapping_below_the_hysteresis(engine, clock):
    # The window's error rate flaps across the 10 % threshold (never under the 8 % recovery level), then
    # recovers, then breaches again inside the cooldown: one "opened", one "resolved", nothing else.
    errors = [10] * 5 + [5, 15] * 6 + [0] * 4 + [60, 60]
    rates = window_rates(errors)
    flaps = sum(1 for a, b in itertools.pairwise(rates) if (a >= 0.1) != (b >= 0.1))
    assert flaps >= 10 and min(rates[4:17]) >= 0.08
    with receiver() as r:
        hook(engine, "ops", r)
        for m, bad in enumerate(errors):
            errors_minute(engine, NOW + minutes(m), 100 - bad, bad)
            step(engine, clock, NOW + minutes(m))
        assert kinds(r) == ["opened", "resolved"]
        assert len(r.requests) == 2
        (alert, ) = engine.alerts.history.all()
        assert alert.status == "resolved" and [e.kind for e in engine.alerts.get(alert.id).events] == [
            "opened", "notified", "resolved", "notified"]
        assert engine.alerts.run_once(NOW + minutes(len(errors) - 1)).suppressed   # the re-breach, held back


def test_slack_block_kit_message(engine, clock):
    engine.registry.sync({"masters": [{"master_id": 1, "name": "Acme <EU>"}],
                          "keys": [{"key_id": 7, "master_id": 1, "name": "prod-eu"}]})
    answers = [(429, {"Retry-After": "30"}, b"rate_limited")]

    with receiver(lambda _: answers.pop(0) if answers else (200, {}, b"ok")) as r:
        engine.notifications.put_channel("team", {"type": "slack", "url": r.url})
        errors_minute(engine, NOW, 80, 20)
        step(engine, clock, NOW)
        assert engine.notifications.deliveries(status="pending").deliveries[0].next_attempt_at >= NOW + \
            dt.timedelta(seconds=30)
        clock.now = NOW + dt.timedelta(seconds=30)
        engine.notifications.run()
        first, second = r.bodies()
        assert first == second                       # the retried message is the same message
        (alert,) = engine.alerts.list_alerts().alerts
        blocks = second["blocks"]
        assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "ezstats alerts: 1 firing"}}
        section = blocks[1]["text"]["text"]
        assert blocks[1]["text"]["type"] == "mrkdwn"
        assert section.startswith(":large_orange_circle: *WARNING* · *error_spike* — opened")
        assert "Key prod-eu (7) of master Acme &lt;EU&gt; (1)" in section
        assert "`error_rate` 20.0 % against threshold 10.0 % over 5m" in section
        context = blocks[2]["elements"][0]["text"]
        assert f"<http://127.0.0.1:8000/admin/alerts/{alert.id}|Alert #{alert.id}>" in context
        assert "error_spike:error_rate:key:7" in context
        assert second["text"].startswith("ezstats alerts: 1 firing: ")


def test_slack_messages_stay_within_block_kit_limits(engine, clock):
    with receiver() as r:
        engine.notifications.put_channel("team", {"type": "slack", "url": r.url})
        for key in range(1, 31):
            errors_minute(engine, NOW, 70, 30, key_id=key)
        step(engine, clock, NOW)
        bodies = r.bodies()
        assert [len(b["blocks"]) for b in bodies] == [41, 21]      # 20 + 10 alerts, a header each
        keys = [re.search(r"Key (\d+)", blk["text"]["text"]).group(1) for b in bodies for blk in b["blocks"]
                if blk["type"] == "section"]
        assert sorted(map(int, keys)) == list(range(1, 31))


def test_messages_show_types_and_scopes_added_later_by_their_ids():
    from engine.notifications.messages import Entry, Subject, summary

    subject = Subject(5, "credential_invalid:status:provider:4", "credential_invalid", "status", "provider", 4, None,
                      None, None, 1.0, 1.0, 60.0, None, NOW)
    text = summary(Entry(subject, "critical", 1.0, "opened", 9), lambda section, ident: "never asked")
    assert text == "credential_invalid critical on provider 4: status 1 (threshold 1, 1m)"
