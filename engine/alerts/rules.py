"""The five alert rules as pure functions: window sums in, observations out.

The detector feeds them sums from one evaluation's SQL; the backtest feeds them sliding sums of
per-minute buckets. Both go through these functions, so a replay judges exactly as the detector does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.alerts.thresholds import ErrorSpikeRule, ProviderDownRule, QuotaRule, RateLimitRule, TrafficRule

TYPES = ("rate_limit", "error_spike", "quota_exceeded", "provider_down", "traffic_spike", "credential_invalid")
#: Types whose alerts are about a disabled entity (a credential_invalid alert is for a disabled provider key):
#: the registry's disabled status does not resolve them, only deletion does.
KEPT_WHEN_DISABLED = frozenset({"credential_invalid"})
SEVERITIES = ("info", "warning", "critical")
SCOPES = ("global", "master", "key", "provider_key")

#: Per scope id (master, key or provider key): (requests, the rule's second count) in a window.
Tally = Mapping[int, tuple[int, int]]


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end)."""

    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> float:
        """Its length in seconds."""
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Observation:
    """One metric of one scope at one evaluation, judged against its thresholds.

    `sufficient` says the evaluation may open or escalate an alert (enough samples);
    `conclusive` says a value below the recovery level counts toward resolving one. A rate over too
    few requests is neither; a volume is conclusive whenever the lake had data in the window.
    """

    type: str
    metric: str
    scope: str
    scope_id: int | None
    value: float
    threshold: float
    critical: float
    samples: int
    window: Window
    sufficient: bool
    conclusive: bool
    master_id: int | None = None
    key_id: int | None = None
    provider_key_id: int | None = None
    period: str | None = None
    period_end: dt.datetime | None = None
    extra: dict[str, float | str] = field(default_factory=dict)

    @property
    def series(self) -> str:
        """Type + metric + scope: what stays the same from one period to the next."""
        return fingerprint(self.type, self.metric, self.scope, self.scope_id)

    @property
    def fingerprint(self) -> str:
        """The dedup key: the series plus the period of per-day and quota alerts; never value or severity."""
        return fingerprint(self.type, self.metric, self.scope, self.scope_id, self.period)

    @property
    def severity(self) -> str | None:
        """`critical` at or over the critical level, `warning` at or over the threshold, else None."""
        if not self.sufficient:
            return None
        if at_least(self.value, self.critical):
            return "critical"
        return "warning" if at_least(self.value, self.threshold) else None


def at_least(value: float, level: float) -> bool:
    """value >= level, forgiving float noise: 40/500 is at the level 0.8 x 0.1 (= 0.08000000000000002)."""
    return value >= level - 1e-9 * abs(level)


def fingerprint(type_: str, metric: str, scope: str, scope_id: int | None, period: str | None = None) -> str:
    """`type:metric:scope:id[:period]`, readable in a log line and stable across versions."""
    parts = [type_, metric, scope, "-" if scope_id is None else str(scope_id)]
    return ":".join([*parts, period] if period else parts)


def rate_limit(tally: Tally, rule: RateLimitRule, window: Window) -> list[Observation]:
    """Masters answered 429 often: share of 429s, gated by `min_samples` requests and `min_count` 429s."""
    return [
        Observation(
            "rate_limit", "rate_limited_share", "master", master, hits / requests, rule.warning, rule.critical,
            requests, window, sufficient=requests >= rule.min_samples and hits >= rule.min_count,
            conclusive=requests >= rule.min_samples, master_id=master, extra={"rate_limited": hits},
        )
        for master, (requests, hits) in tally.items()
        if requests > 0
    ]


def error_spike(tally: Tally, masters: Mapping[int, int], rule: ErrorSpikeRule, window: Window) -> list[Observation]:
    """Keys with a high error rate (errors / requests) over at least `min_samples` requests."""
    out = []
    for key, (requests, errors) in tally.items():
        if requests > 0:
            enough = requests >= rule.min_samples
            out.append(Observation(
                "error_spike", "error_rate", "key", key, errors / requests, rule.warning, rule.critical, requests,
                window, sufficient=enough, conclusive=enough, master_id=masters.get(key), key_id=key,
                extra={"errors": errors},
            ))
    return out


def provider_down(tally: Tally, rule: ProviderDownRule, window: Window) -> list[Observation]:
    """Provider keys whose routed requests fail upstream (>= 500) over at least `min_samples` requests."""
    out = []
    for pkey, (requests, failures) in tally.items():
        if requests > 0:
            enough = requests >= rule.min_samples
            out.append(Observation(
                "provider_down", "failure_rate", "provider_key", pkey, failures / requests, rule.warning,
                rule.critical, requests, window, sufficient=enough, conclusive=enough, provider_key_id=pkey,
                extra={"failures": failures},
            ))
    return out


def traffic_window(tally: Tally, rule: TrafficRule, window: Window) -> list[Observation]:
    """Global QPS and per-master RPM/TPM over the window (window averages).

    A master absent from the tally had no requests: when the lake has data in the window that is a
    real zero (see `VOLUME_METRICS`); when the whole window is empty it is missing data, and the
    global QPS observation is inconclusive.
    """
    total = sum(requests for requests, _ in tally.values())
    return [traffic_global(total, rule, window), *traffic_masters(tally, rule, window)]


def traffic_global(total: int, rule: TrafficRule, window: Window) -> Observation:
    """The gateway's requests per second over the window, from its `total` requests there."""
    return Observation(
        "traffic_spike", "global_qps", "global", None, total / window.seconds, rule.global_qps,
        rule.global_qps * rule.critical_factor, total, window, sufficient=total > 0, conclusive=total > 0,
    )


def traffic_masters(tally: Tally, rule: TrafficRule, window: Window) -> list[Observation]:
    """Per-master requests and tokens per minute over the window (the masters of `tally`)."""
    minutes = window.seconds / 60
    factor = rule.critical_factor
    out = []
    for master, (requests, tokens) in tally.items():
        enough = requests >= rule.min_samples
        for metric, amount in (("master_rpm", requests), ("master_tpm", tokens)):
            limit = rule.limit(metric, master)
            out.append(Observation(
                "traffic_spike", metric, "master", master, amount / minutes, limit, limit * factor, requests,
                window, sufficient=enough, conclusive=True, master_id=master,
            ))
    return out


def traffic_surge(window_tally: Tally, baseline_tally: Tally, baseline_minutes: int, rule: TrafficRule,
                  window: Window, baseline: Window) -> list[Observation]:
    """Per-master request rate in the surge window as a multiple of its rate over the baseline before it.

    The baseline rate is per minute of the baseline that holds any record (`baseline_minutes`); with
    less than half the baseline covered (the start of the lake, a long ingest gap) nothing is judged.
    A master without requests in the baseline has no rate to compare with (the absolute checks judge it).
    """
    if baseline_minutes * 2 < baseline.seconds / 60:
        return []
    factor = rule.critical_factor
    out = []
    for master, (requests, _) in window_tally.items():
        before = baseline_tally.get(master, (0, 0))[0]
        if before == 0:
            continue
        ratio = (requests / (window.seconds / 60)) / (before / baseline_minutes)
        out.append(Observation(
            "traffic_spike", "master_surge", "master", master, ratio, rule.surge_factor, rule.surge_factor * factor,
            requests, window, sufficient=requests >= rule.surge_min_samples, conclusive=True, master_id=master,
            extra={"baseline_requests": before, "baseline_minutes": baseline_minutes},
        ))
    return out


def traffic_day(tally: Tally, rule: TrafficRule, window: Window, day: dt.date) -> list[Observation]:
    """Per-master requests and tokens in the UTC day so far; the day is part of the fingerprint."""
    period_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    factor = rule.critical_factor
    out = []
    for master, (requests, tokens) in tally.items():
        for metric, amount in (("master_rpd", requests), ("master_tpd", tokens)):
            limit = rule.limit(metric, master)
            out.append(Observation(
                "traffic_spike", metric, "master", master, float(amount), limit, limit * factor, requests, window,
                sufficient=requests > 0, conclusive=True, master_id=master, period=day.isoformat(),
                period_end=period_end,
            ))
    return out


def quota_exceeded(usages: Iterable[object], rule: QuotaRule, now: dt.datetime) -> list[Observation]:
    """Keys whose usage this quota period is a high share of their limit; the period is in the fingerprint.

    `usages` are the quota registry's `QuotaUsage` rows (key_id, quota_limit, used, period_start and,
    when it knows it, period_end).
    """
    out = []
    for usage in usages:
        limit = getattr(usage, "quota_limit", 0) or 0
        if limit <= 0:
            continue  # an unlimited or unset quota cannot be exceeded
        key = int(getattr(usage, "key_id"))  # noqa: B009
        used = int(getattr(usage, "used"))  # noqa: B009
        start = _as_utc(getattr(usage, "period_start"))  # noqa: B009
        end = getattr(usage, "period_end", None)
        out.append(Observation(
            "quota_exceeded", "quota_used_share", "key", key, used / limit, rule.warning, rule.critical, used,
            Window(start, now), sufficient=True, conclusive=True, key_id=key, period=start.isoformat(),
            period_end=_as_utc(end) if end is not None else None, extra={"used": used, "quota_limit": limit},
        ))
    return out


def credential_invalid(credentials: Iterable[object], now: dt.datetime) -> list[Observation]:
    """Provider keys whose OAuth credential is disabled (its refresh token stopped working): 1, else 0.

    `credentials` are the credential store's `Credential` answers (provider_key_id, provider_type, status,
    reason, account_id, email). The value is 1 or 0, so the alert opens critical and resolves like any other.
    """
    out = []
    for credential in credentials:
        key = int(getattr(credential, "provider_key_id"))  # noqa: B009
        invalid = getattr(credential, "status", None) == "disabled"
        account = getattr(credential, "email", None) or getattr(credential, "account_id", None) or ""
        extra: dict[str, float | str] = {"provider_type": str(getattr(credential, "provider_type", "")),
                                         "account": str(account)}
        if invalid:
            extra["reason"] = str(getattr(credential, "reason", "") or "")
        out.append(Observation(
            "credential_invalid", "credential_invalid", "provider_key", key, 1.0 if invalid else 0.0, 1.0, 1.0, 1,
            Window(now, now), sufficient=True, conclusive=True, provider_key_id=key, extra=extra,
        ))
    return out


#: (type, metric) pairs for which a scope absent from an evaluation with data counts as a zero.
VOLUME_METRICS = frozenset({("traffic_spike", "master_rpm"), ("traffic_spike", "master_tpm"),
                            ("traffic_spike", "master_surge")})


def _as_utc(value: object) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
