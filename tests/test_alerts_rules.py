"""Scenario tests per alert type at a fixed `now`, on traffic written through the real ingest path."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from engine import Engine, Settings
from engine.alerts import Alerts
from tests.alert_traffic import NOW, Clock, minutes, requests, set_thresholds, store


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def engine(tmp_path, clock):
    return Engine(Settings(data_dir=tmp_path), clock=clock)


def use_quotas(engine: Engine, quotas: object) -> None:
    """Alerts reading key quota usage from `quotas` (a stand-in for the quota registry)."""
    engine.alerts = Alerts(engine.infra, quotas=quotas, inactive=engine.registry.inactive)  # type: ignore[arg-type]


def active(engine: Engine, type_: str):
    return [a for a in engine.alerts.list_alerts().alerts if a.type == type_ and a.status != "resolved"]


# -- error_spike: key error rate >= 10 % over >= 20 requests in 5 minutes ---------------------------


@pytest.mark.parametrize(("ok", "errors", "opens", "severity"), [
    (90, 10, True, "warning"),     # exactly 10 %
    (91, 9, False, None),          # 9 %: just below
    (75, 25, True, "critical"),    # exactly the critical 25 %
    (76, 24, True, "warning"),
    (10, 9, False, None),          # 47 % but 19 requests: below the minimum samples
    (11, 9, True, "critical"),     # 20 requests: exactly the minimum
])
def test_error_spike_thresholds(engine, ok, errors, opens, severity):
    store(engine, requests(NOW, 5, ok, key_id=7, master_id=3), requests(NOW, 5, errors, key_id=7, master_id=3,
                                                                       status=502))
    engine.alerts.run_once(NOW)
    found = active(engine, "error_spike")
    assert bool(found) == opens
    if opens:
        (alert,) = found
        assert (alert.severity, alert.key_id, alert.master_id) == (severity, 7, 3)
        assert (alert.scope, alert.scope_id) == ("key", 7)
        assert alert.value == pytest.approx(errors / (ok + errors)) and alert.samples == ok + errors
        assert alert.fingerprint == "error_spike:error_rate:key:7" and alert.metric == "error_rate"
        assert alert.details == {"errors": errors}
        assert (alert.window_start, alert.window_end) == (dt.datetime.fromisoformat("2026-03-10T11:55Z"),
                                                          dt.datetime.fromisoformat("2026-03-10T12:00Z"))


def test_error_spike_counts_only_the_half_open_window_and_not_429(engine):
    store(engine,
          requests(NOW, 5, 90, key_id=7),
          requests(NOW, 5, 9, key_id=7, status=500),
          requests(NOW, 5, 30, key_id=7, status=429),                 # rate limited is not an error
          requests(NOW - minutes(5), 1, 30, key_id=7, status=500),    # ends just before the window
          requests(NOW + minutes(1), 1, 30, key_id=7, status=500))    # starts at now: outside
    engine.alerts.run_once(NOW)
    assert active(engine, "error_spike") == []
    # Five errors exactly at the window's start count: 14 errors of 134 requests (429s included).
    store(engine, *(requests(NOW - minutes(4), 1, 1, key_id=7, status=500) for _ in range(5)))
    engine.alerts.run_once(NOW)
    assert [a.value for a in active(engine, "error_spike")] == [pytest.approx(14 / 134)]


def test_error_spike_is_per_key(engine):
    store(engine, requests(NOW, 5, 50, key_id=1), requests(NOW, 5, 50, key_id=2, status=500),
          requests(NOW, 5, 50, key_id=2))
    engine.alerts.run_once(NOW)
    assert [a.key_id for a in active(engine, "error_spike")] == [2]


# -- rate_limit: master share of 429 >= 10 %, >= 10 of them, over >= 20 requests ------------------------


@pytest.mark.parametrize(("ok", "limited", "opens", "severity"), [
    (90, 10, True, "warning"),    # 10 % and 10 answers: exactly both thresholds
    (91, 9, False, None),         # 9 %
    (40, 9, False, None),         # 18 % but 9 answers, under min_count
    (5, 14, False, None),         # 19 requests
    (70, 30, True, "critical"),   # 30 %
])
def test_rate_limit_thresholds(engine, ok, limited, opens, severity):
    store(engine, requests(NOW, 5, ok, master_id=4, key_id=1), requests(NOW, 5, limited, master_id=4, key_id=2,
                                                                       status=429, provider_key_id=None))
    engine.alerts.run_once(NOW)
    found = active(engine, "rate_limit")
    assert bool(found) == opens
    if opens:
        (alert,) = found
        assert (alert.severity, alert.scope, alert.master_id) == (severity, "master", 4)
        assert alert.value == pytest.approx(limited / (ok + limited)) and alert.details == {"rate_limited": limited}
    # a 429 is never an error: no error_spike for the same traffic
    assert active(engine, "error_spike") == []


# -- provider_down: provider key failure rate >= 50 % over >= 10 requests -----------------------------


@pytest.mark.parametrize(("ok", "failed", "opens", "severity"), [
    (10, 10, True, "warning"),
    (11, 9, False, None),
    (0, 9, False, None),           # 9 requests: below the minimum
    (1, 9, True, "critical"),      # 90 %
])
def test_provider_down_thresholds(engine, ok, failed, opens, severity):
    set_thresholds(engine, error_spike={"enabled": False})
    store(engine, requests(NOW, 5, ok, provider_key_id=55), requests(NOW, 5, failed, provider_key_id=55, status=503))
    engine.alerts.run_once(NOW)
    found = active(engine, "provider_down")
    assert bool(found) == opens
    if opens:
        (alert,) = found
        assert (alert.severity, alert.scope, alert.provider_key_id) == (severity, "provider_key", 55)


def test_provider_down_ignores_unrouted_and_4xx(engine):
    store(engine, requests(NOW, 5, 10, provider_key_id=55),
          requests(NOW, 5, 30, provider_key_id=None, status=500),    # refused before routing
          requests(NOW, 5, 30, provider_key_id=55, status=400))      # a client error, not the provider's
    engine.alerts.run_once(NOW)
    assert active(engine, "provider_down") == []


# -- traffic_spike ---------------------------------------------------------------------------------------


def test_global_qps_exactly_and_below(engine, clock):
    set_thresholds(engine, traffic_spike={"global_qps": 1.0, "master_rpm": 10_000})
    store(engine, requests(NOW, 1, 59, master_id=1))
    engine.alerts.run_once(NOW)
    assert active(engine, "traffic_spike") == []
    store(engine, requests(NOW, 1, 1, master_id=2))
    engine.alerts.run_once(NOW)
    (alert,) = active(engine, "traffic_spike")
    assert (alert.metric, alert.scope, alert.value, alert.severity) == ("global_qps", "global", 1.0, "warning")
    assert alert.fingerprint == "traffic_spike:global_qps:global:-"


@pytest.mark.parametrize(("count", "severity"), [(29, None), (30, "warning"), (59, "warning"), (60, "critical")])
def test_master_rpm_warning_at_threshold_critical_at_twice(engine, count, severity):
    set_thresholds(engine, traffic_spike={"master_rpm": 30})
    store(engine, requests(NOW, 1, count, master_id=9))
    engine.alerts.run_once(NOW)
    found = [a for a in active(engine, "traffic_spike") if a.metric == "master_rpm"]
    assert [a.severity for a in found] == ([severity] if severity else [])
    if found:
        assert (found[0].threshold, found[0].critical_threshold, found[0].master_id) == (30, 60, 9)


def test_master_rpm_and_tpm_need_min_samples(engine):
    set_thresholds(engine, traffic_spike={"master_rpm": 5, "master_tpm": 100, "min_samples": 10})
    store(engine, requests(NOW, 1, 9, master_id=9, tokens=1000))
    engine.alerts.run_once(NOW)
    assert active(engine, "traffic_spike") == []
    store(engine, requests(NOW, 1, 1, master_id=9, tokens=1000))
    engine.alerts.run_once(NOW)
    found = {a.metric: a for a in active(engine, "traffic_spike")}
    assert set(found) == {"master_rpm", "master_tpm"}
    assert found["master_tpm"].value == 10_000 and found["master_tpm"].severity == "critical"


def test_window_average_over_several_minutes(engine):
    set_thresholds(engine, traffic_spike={"window_minutes": 5, "master_rpm": 20, "global_qps": 1000.0})
    store(engine, requests(NOW, 5, 99, master_id=9))
    engine.alerts.run_once(NOW)
    assert active(engine, "traffic_spike") == []        # 19.8 per minute
    store(engine, requests(NOW, 5, 1, master_id=9))
    engine.alerts.run_once(NOW)
    assert [a.value for a in active(engine, "traffic_spike")] == [20.0]


def test_per_master_override(engine):
    set_thresholds(engine, traffic_spike={"master_rpm": 100, "overrides": {5: {"master_rpm": 10}}})
    store(engine, requests(NOW, 1, 20, master_id=5), requests(NOW, 1, 20, master_id=6))
    engine.alerts.run_once(NOW)
    (alert,) = active(engine, "traffic_spike")
    assert (alert.master_id, alert.threshold, alert.severity) == (5, 10, "critical")


def test_per_day_alerts_are_keyed_by_day(engine, clock):
    set_thresholds(engine, traffic_spike={"master_rpd": 100, "master_tpd": 10**9, "master_rpm": 10_000})
    midnight = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    store(engine, requests(midnight + minutes(60), 30, 99, master_id=8))
    engine.alerts.run_once(NOW)
    assert active(engine, "traffic_spike") == []
    store(engine, requests(NOW, 1, 1, master_id=8))
    engine.alerts.run_once(NOW)
    (today,) = active(engine, "traffic_spike")
    assert (today.metric, today.value, today.period) == ("master_rpd", 100, "2026-03-10")
    assert today.fingerprint == "traffic_spike:master_rpd:master:8:2026-03-10"
    assert (today.window_start, today.window_end) == (dt.datetime.fromisoformat("2026-03-10T00:00Z"),
                                                      dt.datetime.fromisoformat("2026-03-10T12:00Z"))
    # The next day the day's alert ends with its period; the new day opens its own alert.
    next_day = midnight + dt.timedelta(days=1)
    store(engine, requests(next_day + minutes(60), 30, 150, master_id=8))
    result = engine.alerts.run_once(next_day + minutes(120))
    assert result.resolved == [today.id]
    assert engine.alerts.get(today.id).resolution == "period ended"
    (tomorrow,) = active(engine, "traffic_spike")
    assert tomorrow.period == "2026-03-11" and tomorrow.id != today.id and tomorrow.value == 150


def test_per_day_alert_ends_at_midnight_without_traffic(engine):
    set_thresholds(engine, traffic_spike={"master_rpd": 10, "master_rpm": 10_000})
    store(engine, requests(NOW, 10, 10, master_id=8))
    engine.alerts.run_once(NOW)
    (alert,) = active(engine, "traffic_spike")
    engine.alerts.run_once(dt.datetime(2026, 3, 11, 0, 0, tzinfo=dt.UTC))
    assert engine.alerts.get(alert.id).status == "resolved"


# -- quota_exceeded: the quota registry's usage(now) --------------------------------------------------


@dataclass
class Usage:
    key_id: int
    quota_limit: int
    used: int
    period_start: dt.datetime


class Quotas:
    """A stand-in for the jobs issue's quota registry, with its `usage(now)` interface."""

    def __init__(self, *usages: Usage) -> None:
        self.usages = list(usages)

    def usage(self, now: dt.datetime) -> list[Usage]:
        return self.usages


PERIOD = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_quota_without_registry_checks_nothing(engine):
    use_quotas(engine, None)
    result = engine.alerts.run_once(NOW)
    assert result.skipped == ["quota_exceeded: no quota registry"]


def test_a_key_without_a_quota_is_not_checked(engine):
    store(engine, requests(NOW, 5, 50, key_id=12, quota_cost=10**9))
    result = engine.alerts.run_once(NOW)
    assert result.skipped == [] and active(engine, "quota_exceeded") == []


@pytest.mark.parametrize(("cost", "severity"), [(89, None), (90, "warning"), (100, "critical")])
def test_quota_with_the_real_registry(engine, cost, severity):
    engine.quotas.put(12, 1000, "daily")
    # Yesterday's spending is another period; today's is `cost` x 10 of a limit of 1000.
    store(engine, requests(NOW - dt.timedelta(days=1), 5, 10, key_id=12, quota_cost=100),
          requests(NOW, 600, 10, key_id=12, quota_cost=cost))
    engine.alerts.run_once(NOW)
    found = active(engine, "quota_exceeded")
    assert [a.severity for a in found] == ([severity] if severity else [])
    if found:
        assert found[0].details == {"used": cost * 10, "quota_limit": 1000}
        assert found[0].period == "2026-03-10T00:00:00+00:00"


def test_quota_alert_at_the_next_evaluation_after_the_batch(engine):
    # Usage is read afresh each evaluation (rollups for the hours they hold, raw records for the rest):
    # a batch that takes a key over its quota raises the alert at the very next minute.
    engine.quotas.put(12, 1000, "daily")
    store(engine, requests(NOW - dt.timedelta(hours=3), 120, 80, key_id=12, quota_cost=10))
    engine.stats.refresh_rollups(NOW)                      # 800 of 1000, rolled up
    engine.alerts.run_once(NOW)
    assert active(engine, "quota_exceeded") == []
    store(engine, requests(NOW + minutes(1), 1, 15, key_id=12, quota_cost=10))   # in [NOW, NOW + 1 min)
    engine.alerts.run_once(NOW + minutes(1))
    (alert,) = active(engine, "quota_exceeded")
    assert alert.severity == "warning" and alert.details == {"used": 950, "quota_limit": 1000}
    store(engine, requests(NOW + minutes(2), 1, 5, key_id=12, quota_cost=10))
    engine.alerts.run_once(NOW + minutes(2))
    assert active(engine, "quota_exceeded")[0].severity == "critical"


@pytest.mark.parametrize(("used", "severity"), [(89, None), (90, "warning"), (99, "warning"), (100, "critical"),
                                                (250, "critical")])
def test_quota_thresholds(engine, used, severity):
    use_quotas(engine, Quotas(Usage(12, 100, used, PERIOD), Usage(13, 0, 10**6, PERIOD)))   # 0: no limit
    engine.alerts.run_once(NOW)
    found = active(engine, "quota_exceeded")
    assert [a.severity for a in found] == ([severity] if severity else [])
    if found:
        assert found[0].fingerprint == "quota_exceeded:quota_used_share:key:12:2026-03-01T00:00:00+00:00"
        assert found[0].details == {"used": used, "quota_limit": 100}


def test_quota_alert_ends_with_its_period(engine):
    use_quotas(engine, Quotas(Usage(12, 100, 95, PERIOD)))
    engine.alerts.run_once(NOW)
    (old,) = active(engine, "quota_exceeded")
    use_quotas(engine, Quotas(Usage(12, 100, 3, dt.datetime(2026, 3, 10, tzinfo=dt.UTC))))   # the quota was reset
    result = engine.alerts.run_once(NOW + minutes(1))   # (a new registry object: no reuse of the old usage)
    assert result.resolved == [old.id] and engine.alerts.get(old.id).resolution == "period ended"
    use_quotas(engine, Quotas(Usage(12, 100, 96, dt.datetime(2026, 3, 10, tzinfo=dt.UTC))))
    engine.alerts.run_once(NOW + minutes(2))
    (new,) = active(engine, "quota_exceeded")
    assert new.id != old.id and new.period == "2026-03-10T00:00:00+00:00"


# -- traffic_spike surge: a master at several times its own recent rate --------------------------------


def surge_thresholds(engine: Engine) -> None:
    set_thresholds(engine, error_spike={"enabled": False}, provider_down={"enabled": False},
                   rate_limit={"enabled": False},
                   traffic_spike={"surge_factor": 4.0, "surge_window_minutes": 5, "surge_baseline_minutes": 60,
                                  "surge_min_samples": 20})


@pytest.mark.parametrize(("window_requests", "severity"), [(39, None), (40, "warning"), (79, "warning"),
                                                           (80, "critical")])
def test_surge_at_factor_and_twice(engine, window_requests, severity):
    surge_thresholds(engine)
    # Baseline: 2 requests a minute for the hour before the window; then the window.
    store(engine, requests(NOW - minutes(5), 60, 120, master_id=4), requests(NOW, 5, window_requests, master_id=4))
    engine.alerts.run_once(NOW)
    found = [a for a in active(engine, "traffic_spike") if a.metric == "master_surge"]
    assert [a.severity for a in found] == ([severity] if severity else [])
    if found:
        assert found[0].value == pytest.approx(window_requests / 5 / 2)
        assert found[0].details == {"baseline_requests": 120, "baseline_minutes": 60}


def test_surge_needs_min_samples_and_a_covered_baseline(engine):
    surge_thresholds(engine)
    store(engine, requests(NOW - minutes(5), 60, 30, master_id=4), requests(NOW, 5, 19, master_id=4))
    engine.alerts.run_once(NOW)           # 7.6x, but 19 requests in the window
    assert active(engine, "traffic_spike") == []
    # A lake that starts 29 minutes before the window: under half the baseline is covered.
    later = NOW + dt.timedelta(days=1)
    store(engine, requests(later - minutes(5), 29, 29, master_id=5), requests(later, 5, 200, master_id=5))
    engine.alerts.run_once(later)
    assert [a.metric for a in active(engine, "traffic_spike")] == []
    store(engine, requests(later - minutes(34), 1, 1, master_id=6))   # now 30 of 60 minutes hold records
    engine.alerts.run_once(later)
    assert [(a.metric, a.master_id) for a in active(engine, "traffic_spike")] == [("master_surge", 5)]


class BrokenQuotas:
    def usage(self, now: dt.datetime) -> list[Usage]:
        raise RuntimeError("registry down")


def test_a_failing_quota_registry_skips_only_quota(engine):
    use_quotas(engine, BrokenQuotas())
    store(engine, requests(NOW, 5, 80, key_id=7), requests(NOW, 5, 20, key_id=7, status=500))
    result = engine.alerts.run_once(NOW)
    assert result.skipped == ["quota_exceeded: the quota registry failed: registry down"]
    assert [a.type for a in active(engine, "error_spike")] == ["error_spike"]


def test_quota_usage_is_read_at_every_evaluation(engine):
    calls = []

    class Counting(Quotas):
        def usage(self, now):
            calls.append(now)
            return super().usage(now)

    use_quotas(engine, Counting(Usage(12, 100, 95, PERIOD)))
    for m in (0, 1, 4, 5, 6, 3):     # no reuse: each evaluation (a replay's earlier instant too) asks afresh
        engine.alerts.run_once(NOW + minutes(m))
    assert calls == [NOW + minutes(m) for m in (0, 1, 4, 5, 6, 3)]
    assert len(active(engine, "quota_exceeded")) == 1
