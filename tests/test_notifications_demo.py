"""The demo's scripted incidents, detected minute by minute as the scheduler would and notified after each
evaluation: each incident is exactly one "opened" and one "resolved" on every channel, and nothing else is
announced (no message for noise or flapping)."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict

import pytest

from engine import Engine, Settings, demo
from tests.alert_traffic import Clock
from tests.receivers import Receiver, receiver

DAY = dt.date(2026, 1, 30)
ROWS = 100_000   # the `ezstats demo` default


def evaluation_times() -> list[dt.datetime]:
    """Every minute from 5 minutes before each rate incident to 15 after it (the scheduler's cadence: detection
    and the 3-evaluation recovery need every minute), then every quarter hour over the quota incident and into
    the next day, when the daily quota's period and its alert end. The quiet hours in between are covered by
    tests/test_alerts_demo.py's backtest of the whole days (no alert but the incidents')."""
    times = []
    for incident in demo.INCIDENTS:
        start, end = incident.window(DAY)
        if incident.alert_type == "quota_exceeded":
            step, first, last = dt.timedelta(minutes=15), start - dt.timedelta(minutes=15), end + dt.timedelta(minutes=15)
        else:
            step, first, last = dt.timedelta(minutes=1), start - dt.timedelta(minutes=5), end + dt.timedelta(minutes=15)
        moment = first
        while moment <= last:
            times.append(moment)
            moment += step
    return sorted(times)


def webhook_kinds(r: Receiver) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for q in r.requests:
        if q.path.endswith("/hook"):
            for e in q.json()["events"]:
                found[e["alert_id"]].append(e["kind"])
    return found


def slack_kinds(r: Receiver) -> dict[int, list[str]]:
    """What a person reads in Slack: per "Alert #N" link, the events its section names."""
    found: dict[int, list[str]] = defaultdict(list)
    for q in r.requests:
        if q.path.endswith("/slack"):
            blocks = q.json()["blocks"]
            for section, context in zip(blocks[1::2], blocks[2::2], strict=True):
                alert_id = int(re.search(r"\|Alert #(\d+)>", context["elements"][0]["text"]).group(1))
                events = section["text"]["text"].split("\n", 1)[0].rsplit(" — ", 1)[1]
                found[alert_id] += events.split(" → ")
    return found


def incident_of(alert, day: dt.date) -> str | None:
    for incident in demo.INCIDENTS:
        start, end = incident.window(day)
        if (alert.type, alert.scope, alert.scope_id) == (incident.alert_type, incident.scope, incident.scope_id) \
                and start <= alert.opened_at < end:
            return incident.name
    return None


@pytest.mark.slow
def test_each_scripted_incident_is_one_opened_and_one_resolved_per_channel(tmp_path):
    # The demo writes what a gateway would have sent by the clock's now: the whole day.
    clock = Clock(dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), dt.UTC))
    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False), clock=clock)
    engine.generate_demo(1, ROWS, 42, DAY)
    with receiver() as r:
        engine.notifications.put_channel("hook", {"type": "webhook", "url": r.url + "/hook", "secret": "k"})
        engine.notifications.put_channel("slack", {"type": "slack", "url": r.url + "/slack"})
        for moment in evaluation_times():
            clock.now = moment
            engine.alerts.run_once(moment)
            engine.notifications.run()
    alerts = {a.id: a for a in engine.alerts.history.all()}
    by_incident = {incident_of(a, DAY): a.id for a in alerts.values()}
    assert None not in by_incident, [a.fingerprint for a in alerts.values() if incident_of(a, DAY) is None]
    assert sorted(by_incident) == sorted(i.name for i in demo.INCIDENTS)      # one alert per incident, no other
    for channel, kinds in (("webhook", webhook_kinds(r)), ("slack", slack_kinds(r))):
        assert set(kinds) == set(alerts), channel
        for name, alert_id in by_incident.items():
            seen = kinds[alert_id]
            assert (seen.count("opened"), seen.count("resolved")) == (1, 1), (channel, name, seen)
            assert seen[0] == "opened" and seen[-1] == "resolved", (channel, name, seen)
            assert set(seen) <= {"opened", "escalated", "de-escalated", "resolved"}, (channel, name, seen)
    assert {d.status for d in engine.notifications.deliveries(limit=500).deliveries} == {"delivered"}
