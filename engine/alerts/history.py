"""Reading alerts back: one alert with its events, filtered pages with a cursor, counts for a period."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.alerts.rules import SEVERITIES, TYPES
from engine.errors import InvalidParameter, NotFound
from engine.store import ControlStore
from engine.times import INT64_MAX, check_id, check_instant, iso

STATUSES = ("open", "acknowledged", "resolved")
MAX_LIMIT = 500


AlertType = Literal["rate_limit", "error_spike", "quota_exceeded", "provider_down", "traffic_spike",
                    "credential_invalid"]
Severity = Literal["info", "warning", "critical"]
AlertStatus = Literal["open", "acknowledged", "resolved"]
EventKind = Literal["opened", "escalated", "de-escalated", "acknowledged", "ack_expired", "resolved",
                    "notified", "notify_failed"]


class AlertEvent(BaseModel):
    """One entry of an alert's append-only history: a lifecycle event, or a notification of one."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="Its id in its own log: lifecycle events and notification attempts are numbered "
                    "apart.")
    at: dt.datetime
    kind: EventKind = Field(description="A lifecycle event, or `notified` (a channel received an event) / "
                            "`notify_failed` (a delivery's first failed attempt, and the one that dead-lettered it).")
    actor: str = Field(description="`detector`, who acted through the API/CLI, or `notifier`.")
    note: str | None = Field(description="Why: the observation, the ack note or the resolution; for a notification, "
                             "the channel's answer.")
    severity: Severity | None
    value: float | None
    event_id: int | None = Field(None, description="Notifications: the lifecycle event delivered.")
    channel: str | None = Field(None, description="Notifications: the channel.")
    delivery_id: int | None = Field(None, description="Notifications: the delivery (GET "
                                    "/admin/notifications/deliveries/{id}).")


#: Where more entries of an alert's history come from (notifications), by alert id.
HistorySource = Callable[[int], list[AlertEvent]]


class Alert(BaseModel):
    """An alert: what was measured where, against which threshold, and where it is in its lifecycle."""

    model_config = ConfigDict(frozen=True)

    id: int
    fingerprint: str = Field(description="type:metric:scope:id[:period]; one active alert per fingerprint.")
    type: AlertType
    metric: str = Field(description="e.g. error_rate, rate_limited_share, failure_rate, master_rpm, global_qps.")
    scope: Literal["global", "master", "key", "provider_key"]
    scope_id: int | None
    master_id: int | None
    key_id: int | None
    provider_key_id: int | None
    period: str | None = Field(description="The UTC day (per-day checks) or quota period start.")
    status: AlertStatus
    severity: Severity = Field(description="Current severity (escalates and de-escalates in place).")
    peak_severity: Severity
    value: float = Field(description="The metric at the latest evaluation (`evaluated_at`).")
    threshold: float = Field(description="Warning level of the metric.")
    critical_threshold: float
    samples: int = Field(description="Requests behind the latest evaluation (used units for quotas).")
    window_start: dt.datetime = Field(description="The window of the latest evaluation.")
    window_end: dt.datetime
    details: dict[str, float | str] = Field(
        description="The rule's own figures at the latest evaluation (errors, rate_limited, quota_limit...); for "
        "credential_invalid the provider_type, account and reason.")
    peak_value: float = Field(description="The highest value while the alert was active.")
    peak_at: dt.datetime | None = Field(description="The evaluation that saw the peak (null: stored by a version "
                                        "that did not keep it).")
    peak_window_start: dt.datetime | None = Field(description="The window of the peak's evaluation.")
    peak_window_end: dt.datetime | None
    peak_samples: int | None = Field(description="Requests behind the peak.")
    peak_details: dict[str, float | str] | None = Field(description="The rule's own figures at the peak.")
    opened_at: dt.datetime
    last_seen_at: dt.datetime = Field(description="Last evaluation at or over the threshold.")
    evaluated_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    ack_expires_at: dt.datetime | None
    resolved_at: dt.datetime | None
    resolved_by: str | None
    resolution: str | None
    events: list[AlertEvent] = Field(default_factory=list,
                                     description="History, oldest first (GET /admin/alerts/{id} only).")


class AlertPage(BaseModel):
    """A page of alerts, newest first."""

    alerts: list[Alert]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class AlertCounts(BaseModel):
    """Alerts opened in [start, end) counted three ways."""

    start: dt.datetime
    end: dt.datetime
    tz: str = Field("UTC", description="The zone whose days a `period` followed.")
    total: int
    by_type: dict[str, int]
    by_severity: dict[str, int] = Field(description="By peak severity.")
    by_status: dict[str, int]


class AlertChange(BaseModel):
    """A lifecycle event with the facts of its alert that notification channels filter on."""

    model_config = ConfigDict(frozen=True)

    event: AlertEvent
    alert_id: int
    type: str
    scope: str
    master_id: int | None
    key_id: int | None
    provider_key_id: int | None
    acknowledged: bool = Field(description="The alert was acknowledged when the event happened.")


@dataclass(frozen=True)
class AlertFilter:
    """Filters of `list_alerts`; `since`/`until` bound `opened_at` as [since, until)."""

    type: str | None = None
    severity: str | None = None
    status: str | None = None
    master_id: int | None = None
    key_id: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def check(self) -> None:
        """Raises InvalidParameter for values outside their domain."""
        for name, value, allowed in (("type", self.type, TYPES), ("severity", self.severity, SEVERITIES),
                                     ("status", self.status, STATUSES)):
            if value is not None and value not in allowed:
                raise InvalidParameter(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        for name in ("master_id", "key_id"):
            check_id(getattr(self, name), name)
        for name in ("since", "until"):
            if getattr(self, name) is not None:
                check_instant(getattr(self, name), name)
        if self.since and self.until and self.since >= self.until:
            raise InvalidParameter("since must be before until")

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters."""
        terms, params = ["1 = 1"], []
        for column in ("type", "severity", "status", "master_id", "key_id"):
            value = getattr(self, column)
            if value is not None:
                terms.append(f"{column} = ?")
                params.append(value)
        if self.since is not None:
            terms.append("opened_at >= ?")
            params.append(iso(self.since))
        if self.until is not None:
            terms.append("opened_at < ?")
            params.append(iso(self.until))
        return " AND ".join(terms), params


class AlertHistory:
    """Read side of the alerts tables."""

    def __init__(self, store: ControlStore) -> None:
        self.store = store
        self._sources: list[HistorySource] = []

    def add_source(self, source: HistorySource) -> None:
        """Merge `source(alert_id)`'s entries (notifications, from their owner) into `get`'s events."""
        self._sources.append(source)

    def get(self, alert_id: int) -> Alert:
        """One alert with its events (lifecycle and notifications), oldest first. Raises NotFound."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                raise NotFound(f"no alert with id {alert_id}")
            events = [AlertEvent.model_validate(dict(e)) for e in con.execute(
                "SELECT id, at, kind, actor, note, severity, value FROM alert_events WHERE alert_id = ? ORDER BY id",
                (alert_id,))]
        if self._sources:
            events = _merged(events, [e for source in self._sources for e in source(alert_id)])
        return _alert(row, events)

    def by_ids(self, ids: Iterable[int]) -> dict[int, Alert]:
        """The alerts with these ids (without events); ids that do not exist are left out."""
        wanted = sorted(set(ids))
        found: dict[int, Alert] = {}
        with self.store.connect(write=False) as con:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                for row in con.execute(f"SELECT * FROM alerts WHERE id IN ({', '.join('?' * len(chunk))})", chunk):
                    found[row["id"]] = _alert(row)
        return found

    def last_event_id(self) -> int:
        """The id of the latest lifecycle event (0 when there is none)."""
        with self.store.connect(write=False) as con:
            return int(con.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()[0])

    def changes_after(self, event_id: int, limit: int = 1000) -> list[AlertChange]:
        """Lifecycle events after `event_id`, oldest first, at most `limit`, with their alert's facts.

        Event ids grow in commit order (the control store has one writer at a time), so a reader that has seen
        event N has seen every event before it.
        """
        with self.store.connect(write=False) as con:
            rows = con.execute(
                """
                SELECT e.id, e.at, e.kind, e.actor, e.note, e.severity, e.value, e.alert_id, a.type, a.scope,
                       a.master_id, a.key_id, a.provider_key_id,
                       CASE WHEN (SELECT p.kind FROM alert_events p
                                  WHERE p.alert_id = e.alert_id AND p.id < e.id
                                    AND p.kind IN ('acknowledged', 'ack_expired')
                                  ORDER BY p.id DESC LIMIT 1) = 'acknowledged' THEN 1 ELSE 0 END AS acknowledged
                FROM alert_events e JOIN alerts a ON a.id = e.alert_id
                WHERE e.id > ? ORDER BY e.id LIMIT ?
                """, (event_id, limit)).fetchall()
        return [AlertChange(
            event=AlertEvent(id=r["id"], at=r["at"], kind=r["kind"], actor=r["actor"], note=r["note"],
                             severity=r["severity"], value=r["value"]),
            alert_id=r["alert_id"], type=r["type"], scope=r["scope"], master_id=r["master_id"], key_id=r["key_id"],
            provider_key_id=r["provider_key_id"], acknowledged=bool(r["acknowledged"]),
        ) for r in rows]

    def page(self, where: AlertFilter, cursor: str | None = None, limit: int = 50) -> AlertPage:
        """Alerts matching `where`, newest (highest id) first, `limit` at a time.

        Raises:
            InvalidParameter: a filter out of its domain, a limit outside 1..500 or a cursor not from us.
        """
        where.check()
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameter(f"limit must be within 1..{MAX_LIMIT}")
        condition, params = where.where()
        if cursor is not None:
            condition += " AND id < ?"
            params.append(_decode_cursor(cursor))
        with self.store.connect(write=False) as con:
            rows = con.execute(f"SELECT * FROM alerts WHERE {condition} ORDER BY id DESC LIMIT ?",
                               [*params, limit + 1]).fetchall()
        alerts = [_alert(r) for r in rows[:limit]]
        more = len(rows) > limit
        return AlertPage(alerts=alerts, next_cursor=_encode_cursor(alerts[-1].id) if more else None)

    def all(self) -> list[Alert]:
        """Every alert, oldest first (for a backtest's scratch store and for tests)."""
        with self.store.connect(write=False) as con:
            return [_alert(r) for r in con.execute("SELECT * FROM alerts ORDER BY id")]

    def counts(self, where: AlertFilter) -> dict[str, Any]:
        """Alerts opened in [since, until) counted by type, by severity (the peak) and by status."""
        where.check()
        condition, params = where.where()
        out: dict[str, Any] = {"total": 0}
        with self.store.connect(write=False) as con:
            for column, domain in (("type", TYPES), ("peak_severity", SEVERITIES), ("status", STATUSES)):
                found = dict(con.execute(
                    f"SELECT {column}, count(*) FROM alerts WHERE {condition} GROUP BY 1", params).fetchall())
                out["by_" + column.removeprefix("peak_")] = {k: found.get(k, 0) for k in domain}
            out["total"] = sum(out["by_type"].values())
        return out


def _merged(lifecycle: list[AlertEvent], notes: list[AlertEvent]) -> list[AlertEvent]:
    """Notification entries merged into the lifecycle events by time, the lifecycle's own order kept (its
    instants need not grow: a replayed evaluation is in the past) and each after the event it delivered."""
    pending = sorted(notes, key=lambda e: (e.at, e.id))
    out: list[AlertEvent] = []
    seen: set[int] = set()
    for event in lifecycle:
        while pending and pending[0].at <= event.at and pending[0].event_id in seen:
            out.append(pending.pop(0))
        out.append(event)
        seen.add(event.id)
    return out + pending


def _alert(row: sqlite3.Row, events: list[AlertEvent] | None = None) -> Alert:
    data = dict(row)
    for gone in ("series", "period_end", "recovery_streak"):
        data.pop(gone)
    data["details"] = json.loads(data["details"])
    data["peak_details"] = json.loads(data["peak_details"]) if data["peak_details"] else None
    return Alert.model_validate({**data, "events": events or []})


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = data["before"]
    except (ValueError, KeyError, TypeError):
        before = None
    # Only an alert id a page can end on: not a float (1e400, Infinity), a bool, or beyond int64.
    if not isinstance(before, int) or isinstance(before, bool) or not 0 < before <= INT64_MAX:
        raise InvalidParameter(f"invalid cursor {cursor[:100]!r}: pass the next_cursor of a previous page")
    return before
