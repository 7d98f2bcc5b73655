"""The demo's scripted incidents each raise the alert they were scripted for; the quiet parts raise nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import Engine, Settings, demo
from tests.alert_traffic import Clock

DAY = dt.date(2026, 1, 30)
DAYS = 2
ROWS = 100_000   # the `ezstats demo` default
#: An alert opens at the first evaluation whose window holds enough of the incident.
DETECTION_DELAY = dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def demo_engine(tmp_path_factory):
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("demo")),
                    clock=Clock(dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), dt.UTC)))
    engine.generate_demo(DAYS, ROWS, 42, DAY)
    return engine


def matches(alert, incident, day: dt.date) -> bool:
    start, end = incident.window(day)
    opened = alert.opened_at
    return (alert.type == incident.alert_type and alert.scope == incident.scope
            and alert.scope_id == incident.scope_id and start <= opened < end)


@pytest.mark.slow
def test_each_incident_raises_its_alert_and_nothing_else_fires(demo_engine):
    preview = demo_engine.alerts.preview(None, DAY - dt.timedelta(days=DAYS - 1), DAY)   # default thresholds
    assert preview.evaluations == DAYS * 1440
    expected = [(i, DAY - dt.timedelta(days=d)) for i in demo.INCIDENTS if i.alert_type != "quota_exceeded"
                for d in range(DAYS)]
    unexplained = list(preview.alerts)
    for incident, day in expected:
        found = [a for a in unexplained if matches(a, incident, day)]
        assert len(found) == 1, f"{incident.name} on {day}: {found}"
        start, _ = incident.window(day)
        assert found[0].opened_at <= start + DETECTION_DELAY, incident.name
        unexplained.remove(found[0])
    false_positives = [(a.fingerprint, a.opened_at) for a in unexplained]
    assert false_positives == []


@pytest.mark.slow
def test_the_quota_incident_raises_quota_exceeded(demo_engine):
    (incident,) = [i for i in demo.INCIDENTS if i.alert_type == "quota_exceeded"]
    demo_engine.quotas.seed(demo.DEMO_QUOTAS)      # the real registry (jobs issue)
    start, end = incident.window(DAY)
    moment = start - dt.timedelta(hours=1)
    while moment < end:
        demo_engine.alerts.run_once(moment)
        moment += dt.timedelta(minutes=15)
    alerts = [a for a in demo_engine.alerts.history.all() if a.type == "quota_exceeded"]
    midnight = start.replace(hour=0)
    assert [(a.scope, a.key_id, a.period) for a in alerts] == [("key", incident.scope_id, midnight.isoformat())]
    opened = alerts[0].opened_at
    assert start <= opened < end and alerts[0].value >= 0.9
    # The usage it saw, recomputed independently from the records: the day's quota_cost up to then.
    used = demo_engine.sql(
        f"SELECT sum(quota_cost) AS used FROM log_records WHERE key_id = {incident.scope_id} "
        f"AND created_at >= '{midnight.isoformat()}' AND created_at < '{alerts[0].evaluated_at}'")["used"][0].as_py()
    assert alerts[0].details["used"] == used
