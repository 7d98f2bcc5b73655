"""Alertmanager channels against a real Prometheus Alertmanager on loopback: an opened alert is listed with its
labels, a resolved one ends (and Alertmanager's own receiver hears both), a severity change replaces the
alert, a silence is honoured there without ezstats re-sending in a loop, and re-sends keep open alerts alive."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from engine.times import utc_now
from tests.alert_traffic import error_rate_engine, errors_minute
from tests.receivers import Receiver, alertmanager, receiver, wait_for


class ShiftedClock:
    """Real time moved back by `behind`: Alertmanager judges endsAt by its own clock, so the engine's instants
    must not run ahead of it; a test steps time forward by shrinking `behind`."""

    def __init__(self, behind: dt.timedelta) -> None:
        self.behind = behind

    def __call__(self) -> dt.datetime:
        return utc_now() - self.behind

    def step(self, delta: dt.timedelta) -> dt.datetime:
        self.behind -= delta
        return self()


make_engine = error_rate_engine
minute = errors_minute


def active(base: str, **labels: str) -> list[dict]:
    """Alerts Alertmanager lists now (active or suppressed; it never lists resolved ones), matching `labels`."""
    found = httpx.get(f"{base}/api/v2/alerts", timeout=5).json()
    return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]


def pages(pager: Receiver, key_id: str) -> list[tuple[str, str]]:
    """(status, severity) of every alert Alertmanager's own receiver was sent about this key."""
    return [(a["status"], a["labels"]["severity"]) for body in pager.bodies() for a in body["alerts"]
            if a["labels"].get("key_id") == key_id]


@pytest.mark.slow
def test_open_escalate_resolve_in_a_real_alertmanager(tmp_path):
    clock = ShiftedClock(dt.timedelta(minutes=30))
    engine = make_engine(tmp_path, clock)
    with receiver() as pager, alertmanager(tmp_path, pager.url) as am:
        engine.notifications.put_channel("am", {"type": "alertmanager", "url": am})
        now = clock()
        minute(engine, now, 80, 20, key_id=7)
        (alert_id,) = engine.alerts.run_once(now).opened
        assert engine.notifications.run().delivered == 1
        alert = engine.alerts.get(alert_id)

        (listed,) = active(am)
        assert listed["labels"] == {"alertname": "error_spike", "severity": "warning", "metric": "error_rate",
                                    "fingerprint": "error_spike:error_rate:key:7", "scope": "key", "key_id": "7",
                                    "master_id": "1", "source": "ezstats"}
        notes = listed["annotations"]
        assert notes["value"] == "0.2" and notes["threshold"] == "0.1" and notes["window"] == "5m"
        assert notes["console"] == f"http://127.0.0.1:8000/admin/alerts/{alert_id}"
        assert "error_rate 20.0 %" in notes["summary"]
        assert dt.datetime.fromisoformat(listed["startsAt"]) == alert.opened_at.replace(microsecond=
                                                                                       alert.opened_at.microsecond
                                                                                       // 1000 * 1000)
        assert listed["status"]["state"] == "active"
        assert wait_for(lambda: pages(pager, "7")) == [("firing", "warning")]

        # Escalation: the critical alert fires, the warning one ends (severity is part of the identity).
        now = clock.step(dt.timedelta(minutes=1))
        minute(engine, now, 40, 60, key_id=7)
        assert engine.alerts.run_once(now).escalated == [alert_id]
        engine.notifications.run()
        assert [a["labels"]["severity"] for a in active(am)] == ["critical"]

        # Recovery: once the detector resolves it, Alertmanager ends it and says so to its own receiver.
        for _ in range(12):
            now = clock.step(dt.timedelta(minutes=1))
            minute(engine, now, 100, 0, key_id=7)
            engine.alerts.run_once(now)
            engine.notifications.run()
        assert engine.alerts.get(alert_id).status == "resolved"
        assert active(am) == []
        # Alertmanager may flush the two ended alerts in separate group notifications.
        wait_for(lambda: {("resolved", "critical"), ("resolved", "warning")} <= set(pages(pager, "7")))
        events = engine.alerts.get(alert_id).events
        lifecycle = [e.id for e in events if e.kind != "notified"]
        assert [e.kind for e in events if e.kind != "notified"][::len(lifecycle) - 1] == ["opened", "resolved"]
        assert [(e.event_id, e.channel) for e in events if e.kind == "notified"] == [(i, "am") for i in lifecycle]


@pytest.mark.slow
def test_a_silence_is_honoured_and_open_alerts_are_resent_only_at_the_interval(tmp_path):
    clock = ShiftedClock(dt.timedelta(minutes=30))
    engine = make_engine(tmp_path, clock, notify_resend_seconds=60)
    with receiver() as pager, alertmanager(tmp_path, pager.url) as am:
        engine.notifications.put_channel("am", {"type": "alertmanager", "url": am})
        now = clock()
        minute(engine, now, 80, 20, key_id=8)
        (alert_id,) = engine.alerts.run_once(now).opened
        silence = httpx.post(f"{am}/api/v2/silences", timeout=5, json={
            "matchers": [{"name": "fingerprint", "value": "error_spike:error_rate:key:8", "isRegex": False}],
            "startsAt": utc_now().isoformat(), "endsAt": (utc_now() + dt.timedelta(hours=1)).isoformat(),
            "createdBy": "test", "comment": "known issue"}).json()["silenceID"]
        assert engine.notifications.run().delivered == 1
        (listed,) = wait_for(lambda: [a for a in active(am) if a["status"]["state"] == "suppressed"])
        assert listed["status"]["silencedBy"] == [silence]
        updated = listed["updatedAt"]

        # Within the re-send interval the notifier sends nothing, however often it runs.
        for _ in range(5):
            clock.step(dt.timedelta(seconds=10))
            run = engine.notifications.run()
            assert (run.messages, run.resent) == (0, 0)
        time.sleep(1.5)    # past group_wait: a notification would have gone out by now
        assert pages(pager, "8") == []
        (listed,) = active(am)
        assert listed["updatedAt"] == updated and listed["status"]["state"] == "suppressed"

        # At the interval it re-sends once: Alertmanager keeps it, still silenced, still quiet.
        clock.step(dt.timedelta(seconds=15))
        assert engine.notifications.run().resent == 1
        assert engine.notifications.run().resent == 0
        (listed,) = active(am)
        assert listed["updatedAt"] > updated and listed["status"]["silencedBy"] == [silence]
        time.sleep(1.5)
        assert pages(pager, "8") == []
        totals = engine.notifications.metrics().channels[0].totals
        assert totals == {"delivered": 1, "resent": 1}
        assert engine.alerts.get(alert_id).status == "open"


@pytest.mark.slow
def test_resends_keep_an_open_alert_alive_past_the_resolve_timeout(tmp_path):
    clock = ShiftedClock(dt.timedelta(minutes=30))
    engine = make_engine(tmp_path, clock, notify_resend_seconds=1)
    with receiver() as pager, alertmanager(tmp_path, pager.url, resolve_timeout="3s") as am:
        engine.notifications.put_channel("am", {"type": "alertmanager", "url": am})
        now = clock()
        minute(engine, now, 80, 20, key_id=9)
        engine.alerts.run_once(now)
        engine.notifications.run()
        until = time.monotonic() + 8          # well past the 3 s resolve timeout
        while time.monotonic() < until:
            assert len(active(am, key_id="9")) == 1
            engine.notifications.run()
            time.sleep(0.3)
        assert engine.notifications.metrics().channels[0].totals.get("resent", 0) >= 5
        # Without re-sends (ezstats stopped), Alertmanager resolves it by itself after the timeout.
        wait_for(lambda: active(am, key_id="9") == [], timeout=10)


@pytest.mark.slow
def test_test_route_reaches_alertmanager(tmp_path, client_for):
    clock = ShiftedClock(dt.timedelta(0))
    engine = make_engine(tmp_path, clock)
    client = client_for(engine)
    with receiver() as pager, alertmanager(tmp_path, pager.url) as am:
        assert client.put("/admin/notifications/channels/am", json={"type": "alertmanager", "url": am}).status_code \
            == 200
        answer = client.post("/admin/notifications/channels/am/test").json()
        assert answer["ok"] is True and answer["status_code"] == 200 and answer["error"] is None
        (listed,) = active(am)
        assert listed["labels"]["alertname"] == "ezstats_test" and listed["labels"]["test"] == "true"
        assert wait_for(lambda: [a["labels"]["alertname"] for b in pager.bodies() for a in b["alerts"]]) == [
            "ezstats_test"]
