"""What one message says, whatever its format: the alerts it shows firing or ended, and the events it carries.

A message carries one or more events of a channel, in order. Each alert in it appears with its net
state: firing at the severity the channel shows now, plus an ended entry for each severity the
channel showed before (or in between) and no longer does. That is the shape Alertmanager wants (the
severity is a label, so a new severity is a new alert there, and the old one must end), and what lets
several events, grouped by a channel's minimum interval, fit one message without repeating an alert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.alerts.history import Alert
from engine.notifications.outbox import Queued

#: Metrics that are a share of something, shown as percentages.
_SHARES = {"error_rate", "rate_limited_share", "failure_rate", "quota_used_share"}
_UNITS = {"global_qps": "req/s", "master_rpm": "req/min", "master_tpm": "tokens/min", "master_rpd": "requests today",
          "master_tpd": "tokens today"}
_SCOPE_WORDS = {"master": "master", "key": "key", "provider_key": "provider key"}
_SECTIONS = {"master": "masters", "key": "keys", "provider_key": "provider_keys"}


@dataclass(frozen=True)
class Subject:
    """The facts of one alert that every format shows."""

    alert_id: int
    fingerprint: str
    type: str
    metric: str
    scope: str
    scope_id: int | None
    master_id: int | None
    key_id: int | None
    provider_key_id: int | None
    threshold: float
    critical_threshold: float
    window_seconds: float
    period: str | None
    opened_at: dt.datetime
    test: bool = False

    @classmethod
    def of(cls, alert: Alert) -> Subject:
        """The subject of a stored alert."""
        return cls(alert.id, alert.fingerprint, alert.type, alert.metric, alert.scope, alert.scope_id, alert.master_id,
                   alert.key_id, alert.provider_key_id, alert.threshold, alert.critical_threshold,
                   (alert.window_end - alert.window_start).total_seconds(), alert.period, alert.opened_at)

    @classmethod
    def synthetic(cls, channel: str, now: dt.datetime) -> Subject:
        """The made-up alert a channel test sends (alertname `ezstats_test`)."""
        return cls(0, f"ezstats_test:channel:{channel}", "ezstats_test", "error_rate", "global", None, None, None, None,
                   0.1, 0.25, 300.0, None, now, test=True)


@dataclass(frozen=True)
class Entry:
    """One alert as a receiver sees it in a message: firing at `severity`, or ended at it (`ends_at`)."""

    subject: Subject
    severity: str
    value: float | None
    event: str                 # the event behind this state (opened, escalated, resolved, ...)
    event_id: int | None
    ends_at: dt.datetime | None = None
    events: tuple[str, ...] = ()   # every event of this alert in the message, in order

    @property
    def firing(self) -> bool:
        """Still firing at its severity."""
        return self.ends_at is None


@dataclass(frozen=True)
class EventRef:
    """One event a message carries (receivers deduplicate on `id`)."""

    id: int
    kind: str
    alert_id: int
    at: dt.datetime
    severity: str | None
    value: float | None


@dataclass(frozen=True)
class Message:
    """One message to one channel."""

    channel: str
    entries: list[Entry]
    events: list[EventRef]
    public_url: str
    sent_at: dt.datetime

    def link(self, subject: Subject) -> str:
        """Where a person reads the alert."""
        base = self.public_url.rstrip("/")
        return f"{base}/admin/notifications/channels" if subject.test else f"{base}/admin/alerts/{subject.alert_id}"


def entries(batch: Sequence[Queued], alerts: Mapping[int, Alert]) -> list[Entry]:
    """The net state of each alert of a batch (see the module's docstring), alerts in order of first event."""
    groups: dict[int, list[Queued]] = {}
    for d in batch:
        groups.setdefault(d.alert_id, []).append(d)
    out: list[Entry] = []
    for alert_id, deliveries in groups.items():
        alert = alerts.get(alert_id)
        if alert is None:
            continue
        subject = Subject.of(alert)
        kinds = tuple(d.kind for d in deliveries)
        final = deliveries[-1].shown_after
        view = deliveries[0].shown_before
        ended: dict[str, Queued] = {}
        for d in deliveries:
            if view is not None and d.shown_after != view:
                ended[view] = d   # the event that ended what the channel showed
            view = d.shown_after
        for severity, d in ended.items():
            if severity != final:
                out.append(Entry(subject, severity, d.value, d.kind, d.event_id, ends_at=d.event_at, events=kinds))
        if final is not None:
            last = deliveries[-1]
            out.append(Entry(subject, final, last.value, last.kind, last.event_id, events=kinds))
    return out


def refs(batch: Sequence[Queued]) -> list[EventRef]:
    """The events of a batch, in order."""
    return [EventRef(d.event_id, d.kind, d.alert_id, d.event_at, d.severity, d.value) for d in batch]


def figure(metric: str, value: float | None) -> str:
    """A metric's value for people: shares as percentages, volumes with their unit, surges as a multiple."""
    if value is None:
        return "n/a"
    if metric in _SHARES:
        return f"{value * 100:.1f} %"
    if metric == "master_surge":
        return f"{value:.1f}x its baseline"
    amount = f"{value:,.1f}" if abs(value) < 100 and value != int(value) else f"{value:,.0f}"
    return f"{amount} {_UNITS.get(metric, '')}".strip()


def window_text(subject: Subject) -> str:
    """The window a figure covers: `5m`, `1h30m`, or the period of per-day and quota alerts."""
    if subject.period is not None:
        return f"period from {subject.period}"
    seconds = round(subject.window_seconds)
    hours, minutes = divmod(seconds // 60, 60)
    if seconds % 60 or not seconds:
        return f"{seconds}s"
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or not hours else "")


def scope_text(subject: Subject, name: Callable[[str, int], str | None] = lambda section, i: None) -> str:
    """`key prod-eu (1201) of master Acme (12)`; `name(section, id)` gives registry names (None: unknown)."""
    def one(kind: str, ident: int) -> str:
        section = _SECTIONS.get(kind)   # a scope the registry does not name is shown by its id
        label = name(section, ident) if section else None
        word = _SCOPE_WORDS.get(kind, kind.replace("_", " "))
        return f"{word} {label} ({ident})" if label else f"{word} {ident}"

    if subject.scope == "global" or subject.scope_id is None:
        return "the whole gateway"
    text = one(subject.scope, subject.scope_id)
    if subject.scope == "key" and subject.master_id is not None:
        text += " of " + one("master", subject.master_id)
    return text


def summary(entry: Entry, name: Callable[[str, int], str | None] = lambda section, i: None) -> str:
    """One line: what, where, how much against which threshold."""
    s = entry.subject
    if s.test:
        return "Test notification from ezstats: this channel works."
    state = "resolved" if not entry.firing and entry.event == "resolved" else (
        "ended" if not entry.firing else entry.severity)
    limit = s.critical_threshold if entry.severity == "critical" else s.threshold
    return (f"{s.type} {state} on {scope_text(s, name)}: {s.metric} {figure(s.metric, entry.value)} "
            f"(threshold {figure(s.metric, limit)}, {window_text(s)})")


def rfc3339(moment: dt.datetime) -> str:
    """An instant as Alertmanager writes it: UTC, milliseconds, `Z`."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
