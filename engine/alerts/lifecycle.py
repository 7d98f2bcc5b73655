"""The alert lifecycle in the control-plane store: open, update, escalate, recover, acknowledge, resolve.

Invariants, enforced by the store rather than by the code that calls it:
- one active (open or acknowledged) alert per fingerprint: a partial UNIQUE index, and opening is an
  `INSERT ... ON CONFLICT DO NOTHING`, so two detector processes racing on the same breach store one;
- a fingerprint resolved less than `cooldown_minutes` ago cannot open again: the same INSERT carries
  a `NOT EXISTS` guard, evaluated atomically with the insert;
- the event history is append-only: rows in `alert_events` are inserted, never updated.
An evaluation is applied in one transaction, so readers see all of it or none of it.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial

from engine.alerts.rules import KEPT_WHEN_DISABLED, Observation, at_least
from engine.alerts.thresholds import Thresholds
from engine.errors import Conflict, InvalidParameter, NotFound
from engine.store import ControlStore
from engine.times import iso

ACTIVE = ("open", "acknowledged")
DETECTOR = "detector"
_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class Changes:
    """What applying one evaluation did, by alert id."""

    opened: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    de_escalated: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # fingerprints held back by the cooldown


class Lifecycle:
    """Writes of the alert lifecycle over one ControlStore (the real one, or a backtest's scratch one)."""

    def __init__(self, store: ControlStore) -> None:
        self.store = store

    def apply(
        self,
        observations: Iterable[Observation],
        thresholds: Thresholds,
        now: dt.datetime,
        complete: frozenset[tuple[str, str]] = frozenset(),
        retired: Mapping[str, set[int]] | None = None,
        deleted: Mapping[str, set[int]] | None = None,
    ) -> Changes:
        """Apply one evaluation's observations at `now`, in one transaction.

        Args:
            observations: every scope the rules measured (not only breaches).
            thresholds: the settings in force (cooldown and hysteresis).
            now: the evaluation instant.
            complete: (type, metric) pairs whose absent scopes are a measured zero, not missing data.
            retired: ids deleted or disabled in the registry by column (`master_id`, `key_id`,
                `provider_key_id`): they raise nothing, and their active alerts resolve.
            deleted: the ids of `retired` that are deleted: what retires the types of `KEPT_WHEN_DISABLED`.
        """
        retired = {column: ids for column, ids in (retired or {}).items() if ids}
        gone = {column: ids for column, ids in (deleted or {}).items() if ids}

        def is_retired(ids: Callable[[str], int | None]) -> bool:
            found_in = gone if ids("type") in KEPT_WHEN_DISABLED else retired
            return any(ids(column) in found for column, found in found_in.items())

        changes = Changes()
        stamp = iso(now)
        with self.store.connect() as con:
            self._expire_acks(con, stamp)
            active = {row["fingerprint"]: row for row in con.execute(
                "SELECT * FROM alerts WHERE status IN ('open', 'acknowledged')")}
            seen: set[str] = set()
            periods: dict[str, str] = {}
            # Most observations are healthy scopes without an alert: skip them before building strings.
            watched = {(row["type"], row["metric"], row["scope_id"]) for row in active.values()}
            for obs in observations:
                severity = obs.severity
                if severity is None and (obs.type, obs.metric, obs.scope_id) not in watched:
                    continue
                if retired and is_retired(partial(getattr, obs)):
                    continue
                seen.add(obs.fingerprint)
                if obs.period is not None:
                    periods[obs.series] = obs.period
                row = active.get(obs.fingerprint)
                if row is None:
                    if severity is not None:
                        self._open(con, obs, thresholds, stamp, changes)
                else:
                    self._update(con, row, obs, thresholds, stamp, changes)
            for fp, row in active.items():
                if fp in seen:
                    continue
                newer = periods.get(row["series"])
                if retired and is_retired(row.__getitem__):
                    self._resolve(con, row["id"], stamp, DETECTOR, "deleted or disabled in the registry", changes)
                elif (row["period_end"] is not None and row["period_end"] <= stamp) or (
                    newer is not None and row["period"] is not None and newer > row["period"]
                ):
                    self._resolve(con, row["id"], stamp, DETECTOR, "period ended", changes)
                elif (row["type"], row["metric"]) in complete:
                    self._recovering(con, row, 0.0, thresholds, stamp, changes)
                # else: no data for it in this evaluation, which never counts as recovered
        return changes

    def acknowledge(self, alert_id: int, by: str, note: str | None, expires_at: dt.datetime | None,
                    now: dt.datetime) -> None:
        """Acknowledge an active alert (again: replaces note and expiry); it re-opens when the expiry passes.

        Raises:
            NotFound: no such alert. Conflict: it is resolved. InvalidParameter: expiry not in the future.
        """
        if expires_at is not None and expires_at <= now:
            raise InvalidParameter(f"the acknowledgement expiry {iso(expires_at)} is not after now ({iso(now)})")
        stamp = iso(now)
        with self.store.connect() as con:
            row = _active_row(con, alert_id, "acknowledge")
            con.execute(
                "UPDATE alerts SET status = 'acknowledged', acknowledged_at = ?, acknowledged_by = ?, ack_note = ?,"
                " ack_expires_at = ? WHERE id = ?",
                (stamp, by, note, iso(expires_at) if expires_at else None, alert_id),
            )
            _event(con, alert_id, stamp, "acknowledged", by, note, row["severity"], row["value"])

    def resolve(self, alert_id: int, by: str, note: str | None, now: dt.datetime) -> None:
        """Resolve an active alert by hand; the cooldown starts now.

        Raises:
            NotFound: no such alert. Conflict: it is already resolved.
        """
        with self.store.connect() as con:
            _active_row(con, alert_id, "resolve")
            self._resolve(con, alert_id, iso(now), by, note or "resolved manually", Changes())

    def resolve_scope(self, column: str, scope_id: int, by: str, note: str, now: dt.datetime,
                      alert_type: str | None = None) -> list[int]:
        """Resolve every active alert (of `alert_type`, or any) whose `column` (master_id, key_id,
        provider_key_id) is `scope_id`."""
        if column not in ("master_id", "key_id", "provider_key_id"):
            raise InvalidParameter(f"cannot resolve alerts by {column!r}")
        changes = Changes()
        with self.store.connect() as con:
            ids = [r["id"] for r in con.execute(
                f"SELECT id FROM alerts WHERE {column} = ? AND (? IS NULL OR type = ?)"
                " AND status IN ('open', 'acknowledged') ORDER BY id", (scope_id, alert_type, alert_type))]
            for alert_id in ids:
                self._resolve(con, alert_id, iso(now), by, note, changes)
        return changes.resolved

    def adopt(self, source: ControlStore) -> list[int]:
        """Copy the alerts (and their events) of another store, e.g. a replay's, into this one; returns
        the new ids.

        An alert already here (same fingerprint opened at the same instant) is skipped, so adopting the
        same replay twice copies it once; so is an active one whose fingerprint is active here.
        """
        with source.connect(write=False) as src:
            alerts = [dict(r) for r in src.execute("SELECT * FROM alerts ORDER BY id")]
            events = [dict(r) for r in src.execute("SELECT * FROM alert_events ORDER BY id")]
        by_alert: dict[int, list[dict[str, object]]] = {}
        for event in events:
            by_alert.setdefault(int(event["alert_id"]), []).append(event)
        added = []
        with self.store.connect() as con:
            for alert in alerts:
                known = con.execute("SELECT 1 FROM alerts WHERE fingerprint = ? AND (opened_at = ? OR (status IN "
                                    "('open', 'acknowledged') AND ? IN ('open', 'acknowledged')))",
                                    (alert["fingerprint"], alert["opened_at"], alert["status"])).fetchone()
                if known:
                    continue
                old_id = alert.pop("id")
                columns = ", ".join(alert)
                new_id = con.execute(f"INSERT INTO alerts ({columns}) VALUES ({', '.join('?' * len(alert))}) "
                                     "RETURNING id", tuple(alert.values())).fetchone()["id"]
                for event in by_alert.get(int(old_id), []):
                    _event(con, new_id, str(event["at"]), str(event["kind"]), str(event["actor"]),
                           event["note"], event["severity"], event["value"])  # type: ignore[arg-type]
                added.append(new_id)
        return added

    # -- the steps of `apply` -----------------------------------------------------------------

    def _open(self, con: sqlite3.Connection, obs: Observation, thresholds: Thresholds, stamp: str,
              changes: Changes) -> None:
        since = iso(dt.datetime.fromisoformat(stamp) - dt.timedelta(minutes=thresholds.cooldown_minutes))
        severity = obs.severity or "warning"
        cur = con.execute(
            """
            INSERT INTO alerts (fingerprint, series, type, metric, scope, scope_id, master_id, key_id,
                provider_key_id, period, period_end, status, severity, peak_severity, value, peak_value,
                threshold, critical_threshold, samples, window_start, window_end, details, opened_at,
                last_seen_at, evaluated_at, peak_at, peak_window_start, peak_window_end, peak_samples, peak_details)
            SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
            WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE fingerprint = ? AND status = 'resolved' AND resolved_at > ?)
            ON CONFLICT (fingerprint) WHERE status IN ('open', 'acknowledged') DO NOTHING
            RETURNING id
            """,
            (obs.fingerprint, obs.series, obs.type, obs.metric, obs.scope, obs.scope_id, obs.master_id, obs.key_id,
             obs.provider_key_id, obs.period, iso(obs.period_end) if obs.period_end else None, severity, severity,
             obs.value, obs.value, obs.threshold, obs.critical, obs.samples, iso(obs.window.start),
             iso(obs.window.end), json.dumps(obs.extra), stamp, stamp, stamp, stamp, iso(obs.window.start),
             iso(obs.window.end), obs.samples, json.dumps(obs.extra), obs.fingerprint, since),
        )
        row = cur.fetchone()
        if row is None:
            changes.suppressed.append(obs.fingerprint)
            return
        changes.opened.append(row["id"])
        _event(con, row["id"], stamp, "opened", DETECTOR, _describe(obs), severity, obs.value)

    def _update(self, con: sqlite3.Connection, row: sqlite3.Row, obs: Observation, thresholds: Thresholds,
                stamp: str, changes: Changes) -> None:
        severity = obs.severity
        if severity is None:
            if not obs.conclusive:
                return  # too few samples: neither a breach nor a recovery
            if not at_least(obs.value, thresholds.recovery_ratio * obs.threshold):
                self._recovering(con, row, obs.value, thresholds, stamp, changes, obs)
                return
            # Between the recovery level and the threshold: still open, and the streak starts over;
            # a critical alert whose value left the critical band comes down to warning.
            severity = "warning" if row["severity"] == "critical" else row["severity"]
            last_seen = row["last_seen_at"]
        else:
            last_seen = stamp
        con.execute(
            "UPDATE alerts SET severity = ?, peak_severity = ?, threshold = ?, critical_threshold = ?,"
            " recovery_streak = 0, last_seen_at = ? WHERE id = ?",
            (severity, _max_severity(row["peak_severity"], severity), obs.threshold, obs.critical, last_seen,
             row["id"]),
        )
        _observed(con, row, obs.value, obs.samples, obs.window.start, obs.window.end, obs.extra, stamp)
        if severity != row["severity"]:
            kind = "escalated" if _RANK[severity] > _RANK[row["severity"]] else "de-escalated"
            (changes.escalated if kind == "escalated" else changes.de_escalated).append(row["id"])
            _event(con, row["id"], stamp, kind, DETECTOR, _describe(obs), severity, obs.value)
        else:
            changes.updated.append(row["id"])

    def _recovering(self, con: sqlite3.Connection, row: sqlite3.Row, value: float, thresholds: Thresholds,
                    stamp: str, changes: Changes, obs: Observation | None = None) -> None:
        streak = row["recovery_streak"] + 1
        con.execute("UPDATE alerts SET recovery_streak = ? WHERE id = ?", (streak, row["id"]))
        if obs is not None:
            _observed(con, row, value, obs.samples, obs.window.start, obs.window.end, obs.extra, stamp)
        else:  # absent from an evaluation that saw data: a measured zero over the rule's window ending now
            now = dt.datetime.fromisoformat(stamp)
            width = dt.datetime.fromisoformat(row["window_end"]) - dt.datetime.fromisoformat(row["window_start"])
            _observed(con, row, value, 0, now - width, now, {}, stamp)
        if streak >= thresholds.recovery_evaluations:
            level = thresholds.recovery_ratio * row["threshold"]
            self._resolve(con, row["id"], stamp, DETECTOR,
                          f"recovered: below {level:g} for {streak} evaluation(s)", changes)
        else:
            changes.updated.append(row["id"])

    @staticmethod
    def _resolve(con: sqlite3.Connection, alert_id: int, stamp: str, by: str, why: str, changes: Changes) -> None:
        row = con.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = ?, resolved_by = ?, resolution = ? WHERE id = ?"
            " RETURNING severity, value",
            (stamp, by, why, alert_id),
        ).fetchone()
        changes.resolved.append(alert_id)
        _event(con, alert_id, stamp, "resolved", by, why, row["severity"], row["value"])

    @staticmethod
    def _expire_acks(con: sqlite3.Connection, stamp: str) -> None:
        expired = con.execute(
            "UPDATE alerts SET status = 'open' WHERE status = 'acknowledged' AND ack_expires_at IS NOT NULL"
            " AND ack_expires_at <= ? RETURNING id, severity, value",
            (stamp,),
        ).fetchall()
        for row in expired:
            _event(con, row["id"], stamp, "ack_expired", DETECTOR, None, row["severity"], row["value"])


def _observed(con: sqlite3.Connection, row: sqlite3.Row, value: float, samples: int, start: dt.datetime,
              end: dt.datetime, details: Mapping[str, float | str], stamp: str) -> None:
    """Record one evaluation of an active alert: value, samples, window and details all from it, and the
    peak moved to it when it is the highest value yet."""
    figures = json.dumps(dict(details))
    con.execute("UPDATE alerts SET value = ?, samples = ?, window_start = ?, window_end = ?, details = ?,"
                " evaluated_at = ? WHERE id = ?", (value, samples, iso(start), iso(end), figures, stamp, row["id"]))
    if value > row["peak_value"] or (row["peak_at"] is None and value >= row["peak_value"]):
        con.execute("UPDATE alerts SET peak_value = ?, peak_at = ?, peak_window_start = ?, peak_window_end = ?,"
                    " peak_samples = ?, peak_details = ? WHERE id = ?",
                    (value, stamp, iso(start), iso(end), samples, figures, row["id"]))


def _active_row(con: sqlite3.Connection, alert_id: int, action: str) -> sqlite3.Row:
    row = con.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    if row["status"] not in ACTIVE:
        raise Conflict(f"alert {alert_id} is {row['status']}; only open or acknowledged alerts can be {action}d")
    return row  # type: ignore[no-any-return]


def _event(con: sqlite3.Connection, alert_id: int, stamp: str, kind: str, actor: str, note: str | None,
           severity: str | None, value: float | None) -> None:
    con.execute(
        "INSERT INTO alert_events (alert_id, at, kind, actor, note, severity, value) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (alert_id, stamp, kind, actor, note, severity, value),
    )


def _max_severity(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


def _describe(obs: Observation) -> str:
    if obs.type == "credential_invalid":
        return (f"the {obs.extra.get('provider_type')} credential of provider key {obs.scope_id} "
                f"({obs.extra.get('account') or 'unknown account'}) is disabled: {obs.extra.get('reason')}")
    return (f"{obs.metric} = {obs.value:g} (threshold {obs.threshold:g}, critical {obs.critical:g},"
            f" {obs.samples} samples)")
