"""The alert lifecycle: dedup, escalation in place, cooldown, hysteresis, missing data, ack, concurrency."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
import threading
from fractions import Fraction

import pytest

from engine import Engine, Settings
from engine.errors import Conflict, InvalidParameter, NotFound
from tests.alert_traffic import NOW, Clock, minutes, requests, set_thresholds, store
from tests.conftest import ON_BOTH


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def engine(tmp_path, clock):
    engine = Engine(Settings(data_dir=tmp_path), clock=clock)
    # error_spike alone keeps each scenario's expected alerts obvious.
    set_thresholds(engine, rate_limit={"enabled": False}, provider_down={"enabled": False},
                   traffic_spike={"enabled": False})
    return engine


def errors_minute(engine: Engine, end: dt.datetime, ok: int, failed: int, key_id: int = 7) -> None:
    """One minute of one key's traffic ending at `end`."""
    store(engine, requests(end, 1, ok, key_id=key_id), requests(end, 1, failed, key_id=key_id, status=500))


def kinds(engine: Engine, alert_id: int) -> list[str]:
    return [e.kind for e in engine.alerts.get(alert_id).events]


@ON_BOTH  # also on the PostgreSQL control store
def test_repeated_breaches_update_one_alert(engine):
    for m in range(5):
        errors_minute(engine, NOW + minutes(m), 80, 20)
    ids = set()
    for m in range(5):
        result = engine.alerts.run_once(NOW + minutes(m))
        ids.update(result.opened + result.updated)
    (alert,) = engine.alerts.list_alerts().alerts
    assert ids == {alert.id} and alert.evaluated_at.isoformat().startswith("2026-03-10T12:04")
    assert kinds(engine, alert.id) == ["opened"]


@ON_BOTH  # also on the PostgreSQL control store
def test_escalate_and_de_escalate_on_the_same_alert(engine):
    errors_minute(engine, NOW, 90, 10)                  # 10 %: warning
    first = engine.alerts.run_once(NOW + minutes(0))
    errors_minute(engine, NOW + minutes(1), 40, 60)     # window 70/200 = 35 %: critical
    second = engine.alerts.run_once(NOW + minutes(1))
    errors_minute(engine, NOW + minutes(2), 300, 0)     # window 70/500 = 14 %: back to warning
    third = engine.alerts.run_once(NOW + minutes(2))
    (alert_id,) = first.opened
    assert second.escalated == [alert_id] and third.de_escalated == [alert_id]
    alert = engine.alerts.get(alert_id)
    assert (alert.severity, alert.peak_severity) == ("warning", "critical")
    assert alert.peak_value == pytest.approx(0.35) and alert.value == pytest.approx(0.14)
    assert [(e.kind, e.severity) for e in alert.events] == [
        ("opened", "warning"), ("escalated", "critical"), ("de-escalated", "warning")]
    assert len(engine.alerts.list_alerts().alerts) == 1


def predicted_resolution(plan: list[tuple[int, int]]) -> int | None:
    """Plain-Python hysteresis over per-minute (ok, errors): the first evaluation minute that resolves.

    Minute m of the plan covers [NOW + m - 1, NOW + m); the evaluation at NOW + k sees minutes k-4..k.
    """
    streak = 0
    for k in range(1, len(plan)):
        window = plan[max(0, k - 4):k + 1]
        total, bad = sum(o + b for o, b in window), sum(b for _, b in window)
        if total < 20:
            continue
        rate = Fraction(bad, total)
        if rate >= Fraction(1, 10):
            streak = 0
        elif rate < Fraction(8, 100):
            streak += 1
            if streak == 3:
                return k
        else:
            streak = 0
    return None


@pytest.mark.parametrize("plan", [
    [(80, 20)] + [(100, 0)] * 11,                                  # clean recovery
    [(80, 20)] + [(95, 5)] * 3 + [(91, 9)] * 6 + [(100, 0)] * 8,    # 9 %: between recovery and threshold
    [(80, 20)] + [(100, 0)] * 2 + [(60, 40)] + [(100, 0)] * 12,     # a relapse restarts the streak
], ids=["clean", "hovering", "relapse"])
def test_auto_resolve_after_recovery_evaluations(engine, plan):
    for m, (ok, bad) in enumerate(plan):
        errors_minute(engine, NOW + minutes(m), ok, bad)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    expected = predicted_resolution(plan)
    assert expected is not None and expected >= 4
    resolved_at = next((m for m in range(1, len(plan)) if engine.alerts.run_once(NOW + minutes(m)).resolved), None)
    assert resolved_at == expected
    alert = engine.alerts.get(alert_id)
    assert alert.status == "resolved" and alert.resolved_by == "detector" and "3 evaluation(s)" in alert.resolution
    assert alert.resolved_at == NOW + minutes(expected)


def test_no_resolve_on_missing_data_or_too_few_samples(engine):
    errors_minute(engine, NOW, 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    for m in range(6, 30):                              # no records at all for this key
        assert engine.alerts.run_once(NOW + minutes(m)).resolved == []
    store(engine, requests(NOW + minutes(40), 5, 19, key_id=7))   # healthy, but only 19 requests
    for m in range(40, 46):
        assert engine.alerts.run_once(NOW + minutes(m)).resolved == []
    assert engine.alerts.get(alert_id).status == "open"


def test_traffic_alert_recovers_when_the_master_goes_quiet_but_not_when_the_lake_is_empty(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path), clock=Clock())
    set_thresholds(engine, error_spike={"enabled": False}, provider_down={"enabled": False},
                   rate_limit={"enabled": False}, traffic_spike={"master_rpm": 50})
    store(engine, requests(NOW, 1, 60, master_id=1))
    (alert_id,) = engine.alerts.run_once(NOW).opened
    for m in range(1, 10):                              # the lake has nothing: missing data
        assert engine.alerts.run_once(NOW + minutes(m)).resolved == []
    for m in range(10, 13):                             # others' traffic: master 1 is really at zero
        store(engine, requests(NOW + minutes(m), 1, 5, master_id=2))
    assert engine.alerts.run_once(NOW + minutes(10)).resolved == []
    assert engine.alerts.run_once(NOW + minutes(11)).resolved == []
    assert engine.alerts.run_once(NOW + minutes(12)).resolved == [alert_id]


@ON_BOTH  # also on the PostgreSQL control store
def test_cooldown_after_resolve(engine, clock):
    for m in range(12):
        errors_minute(engine, NOW + minutes(m), 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    clock.now = NOW + minutes(1)
    engine.alerts.resolve(alert_id, by="ops", note="known incident")
    for m in range(2, 6):                               # resolved at 12:01; cooldown until 12:06
        result = engine.alerts.run_once(NOW + minutes(m))
        assert result.opened == [] and result.suppressed == ["error_spike:error_rate:key:7"]
    reopened = engine.alerts.run_once(NOW + minutes(6)).opened
    assert len(reopened) == 1 and reopened[0] != alert_id
    assert [a.status for a in engine.alerts.list_alerts().alerts] == ["open", "resolved"]


def test_cooldown_is_a_threshold(engine, clock):
    set_thresholds(engine, cooldown_minutes=0, rate_limit={"enabled": False}, provider_down={"enabled": False},
                   traffic_spike={"enabled": False})
    errors_minute(engine, NOW, 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    engine.alerts.resolve(alert_id)
    assert len(engine.alerts.run_once(NOW).opened) == 1


@ON_BOTH  # also on the PostgreSQL control store
def test_acknowledge_with_note_and_expiry(engine, clock):
    for m in range(10):
        errors_minute(engine, NOW + minutes(m), 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    alert = engine.alerts.ack(alert_id, by="ana", note="looking", expires_at=NOW + minutes(3))
    assert (alert.status, alert.acknowledged_by, alert.ack_note) == ("acknowledged", "ana", "looking")
    engine.alerts.run_once(NOW + minutes(2))
    assert engine.alerts.get(alert_id).status == "acknowledged"
    engine.alerts.run_once(NOW + minutes(3))
    alert = engine.alerts.get(alert_id)
    assert alert.status == "open"
    assert [(e.kind, e.actor, e.note) for e in alert.events] == [
        ("opened", "detector", alert.events[0].note), ("acknowledged", "ana", "looking"),
        ("ack_expired", "detector", None)]


def test_ack_and_resolve_errors(engine):
    errors_minute(engine, NOW, 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    with pytest.raises(InvalidParameter):
        engine.alerts.ack(alert_id, expires_at=NOW - minutes(1))
    with pytest.raises(NotFound):
        engine.alerts.ack(999)
    engine.alerts.resolve(alert_id, note="done")
    with pytest.raises(Conflict):
        engine.alerts.resolve(alert_id)
    with pytest.raises(Conflict):
        engine.alerts.ack(alert_id)
    assert kinds(engine, alert_id) == ["opened", "resolved"]


def test_store_refuses_a_second_active_alert_per_fingerprint(engine):
    errors_minute(engine, NOW, 80, 20)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    con = sqlite3.connect(engine.settings.control_db)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            con.execute("INSERT INTO alerts SELECT NULL, fingerprint, series, type, metric, scope, scope_id, master_id,"
                        " key_id, provider_key_id, period, period_end, 'open', severity, peak_severity, value,"
                        " peak_value, threshold, critical_threshold, samples, window_start, window_end, details, 0,"
                        " opened_at, last_seen_at, evaluated_at, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                        " peak_at, peak_window_start, peak_window_end, peak_samples, peak_details"
                        " FROM alerts WHERE id = ?", (alert_id,))
    finally:
        con.close()


@ON_BOTH  # also on the PostgreSQL control store
def test_events_are_append_only_history(engine, clock):
    errors_minute(engine, NOW, 90, 10)
    (alert_id,) = engine.alerts.run_once(NOW).opened
    errors_minute(engine, NOW + minutes(1), 0, 100)
    engine.alerts.run_once(NOW + minutes(1))
    engine.alerts.ack(alert_id, by="ana")
    engine.alerts.resolve(alert_id, by="bo", note="fixed")
    events = engine.alerts.get(alert_id).events
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [(e.kind, e.actor) for e in events] == [("opened", "detector"), ("escalated", "detector"),
                                                    ("acknowledged", "ana"), ("resolved", "bo")]


def _detect(data_dir: str, barrier: threading.Barrier | None = None) -> list[int]:
    engine = Engine(Settings(data_dir=data_dir), clock=Clock())
    if barrier is not None:
        barrier.wait()
    return engine.alerts.run_once(NOW).opened


@ON_BOTH  # also on the PostgreSQL control store
def test_two_concurrent_detector_threads_open_one_alert(engine, tmp_path):
    errors_minute(engine, NOW, 80, 20)
    barrier = threading.Barrier(4)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(_detect(str(tmp_path), barrier))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert len(engine.alerts.list_alerts().alerts) == 1


@pytest.mark.slow
def test_two_detector_processes_open_one_alert(engine, tmp_path):
    errors_minute(engine, NOW, 80, 20)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_detect, [str(tmp_path)] * 2)
    assert sorted(len(r) for r in results) == [0, 1]
    assert len(engine.alerts.list_alerts().alerts) == 1


def test_resolve_scope_for_a_deleted_provider_key(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path), clock=Clock())
    store(engine, requests(NOW, 5, 5, provider_key_id=55), requests(NOW, 5, 20, provider_key_id=55, status=503),
          requests(NOW, 5, 5, provider_key_id=56, key_id=8), requests(NOW, 5, 20, provider_key_id=56, key_id=8,
                                                                     status=503))
    engine.alerts.run_once(NOW)
    down = {a.provider_key_id: a.id for a in engine.alerts.list_alerts().alerts if a.type == "provider_down"}
    assert set(down) == {55, 56}
    assert engine.alerts.resolve_scope("provider_key_id", 55, note="provider deleted") == [down[55]]
    assert engine.alerts.get(down[55]).resolution == "provider deleted"
    assert engine.alerts.get(down[56]).status == "open"
    with pytest.raises(InvalidParameter):
        engine.alerts.resolve_scope("model", 1)


def test_registry_deleted_or_disabled_scopes_raise_nothing_and_resolve(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path), clock=Clock())
    for pkey in (55, 56, 57):
        store(engine, requests(NOW + minutes(10), 15, 15, provider_key_id=pkey, key_id=pkey),
              requests(NOW + minutes(10), 15, 60, provider_key_id=pkey, key_id=pkey, status=503))
    engine.alerts.run_once(NOW)
    down = {a.provider_key_id: a.id for a in engine.alerts.list_alerts().alerts if a.type == "provider_down"}
    assert set(down) == {55, 56, 57}
    engine.registry.sync({"providers": [{"provider_id": 1, "name": "openai", "provider_type": "openai",
                                         "keys": [{"provider_key_id": 56, "name": "k56", "status": "disabled"}]}],
                          "deleted": {"provider_keys": [57]}})
    result = engine.alerts.run_once(NOW + minutes(1))
    assert sorted(result.resolved) == sorted([down[56], down[57]])
    assert engine.alerts.get(down[57]).resolution == "deleted or disabled in the registry"
    assert engine.alerts.get(down[55]).status == "open"
    engine.alerts.resolve(down[55])
    result = engine.alerts.run_once(NOW + minutes(6))      # after the cooldown: only 55 opens again
    assert [engine.alerts.get(i).provider_key_id for i in result.opened if engine.alerts.get(i).type ==
            "provider_down"] == [55]


def test_alert_fields_describe_one_evaluation_and_the_peak_its_own(engine):
    """The newcomer's scenario: 34 requests in a window, all failed, open an alert; a later evaluation sees
    53 requests without an error. value, samples, window and details must all be that later evaluation's,
    and the peak the breach's, with its own window and time."""
    store(engine, requests(NOW, 5, 34, key_id=7, status=500))
    (alert_id,) = engine.alerts.run_once(NOW).opened
    later = NOW + minutes(6)
    store(engine, requests(later, 5, 53, key_id=7))
    engine.alerts.run_once(later)
    a = engine.alerts.get(alert_id)
    assert a.status == "open"
    assert (a.value, a.samples, a.details) == (0.0, 53, {"errors": 0})
    assert (a.window_start, a.window_end, a.evaluated_at) == (later - minutes(5), later, later)
    assert (a.peak_value, a.peak_samples, a.peak_details) == (1.0, 34, {"errors": 34})
    assert (a.peak_window_start, a.peak_window_end, a.peak_at) == (NOW - minutes(5), NOW, NOW)
    # The window the latest evaluation reports holds exactly the requests it says.
    con = engine.connect()
    try:
        held = con.execute("SELECT count(*), count(*) FILTER (status_code >= 400) FROM log_records WHERE key_id = 7"
                           " AND created_at >= ? AND created_at < ?", [a.window_start, a.window_end]).fetchone()
    finally:
        con.close()
    assert held == (a.samples, a.details["errors"])


def test_an_absent_scope_reports_a_zero_window_ending_now(engine):
    """A master gone quiet in an evaluation that saw other traffic is a measured zero: the window moves too."""
    set_thresholds(engine, traffic_spike={"enabled": True, "master_rpm": 50, "min_samples": 10})
    store(engine, requests(NOW, 1, 120, master_id=3, key_id=30))
    (alert_id,) = [i for i in engine.alerts.run_once(NOW).opened
                   if engine.alerts.get(i).metric == "master_rpm"]
    later = NOW + minutes(2)
    store(engine, requests(later, 1, 5, master_id=4, key_id=40))
    engine.alerts.run_once(later)
    a = engine.alerts.get(alert_id)
    assert (a.value, a.samples, a.details) == (0.0, 0, {})
    assert (a.window_start, a.window_end) == (later - minutes(1), later)
    assert (a.peak_value, a.peak_samples, a.peak_window_end) == (120.0, 120, NOW)
