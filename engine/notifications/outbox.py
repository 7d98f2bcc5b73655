"""The durable outbox: which alert event goes to which channel, each attempt, and who is sending now.

Guarantees, enforced by the store rather than by the callers:
- an event becomes at most one delivery per channel: `UNIQUE (event_id, channel)` and `INSERT OR IGNORE`,
  behind a cursor advanced in the same transaction (compare-and-set), so notifiers racing on the same
  events store each delivery once;
- one notifier at a time sends to a channel: a lease on the channel (taken in the transaction that reads
  the batch, only if no other live owner holds it; with an expiry, so a dead notifier's lease lapses),
  released with the batch's outcome; with one sender per channel its events leave in order and none
  leaves twice;
- attempts are append-only; the totals behind `/metrics` only grow.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.alerts.history import AlertChange, AlertEvent
from engine.errors import Conflict, InvalidParameter, NotFound
from engine.notifications.channels import StoredChannel
from engine.notifications.deliveries import STATUSES, Delivery, DeliveryAttempt, DeliveryPage
from engine.notifications.routing import Skip, shown_after
from engine.notifications.transport import Response
from engine.store import ControlStore
from engine.times import iso

MAX_LIMIT = 500

#: Delay before the next attempt, given the attempt that just failed (1-based) and the receiver's Retry-After.
Backoff = Callable[[int, float | None], float]


@dataclass(frozen=True)
class Queued:
    """A pending delivery as the notifier sends it."""

    id: int
    event_id: int
    alert_id: int
    kind: str
    event_at: dt.datetime
    severity: str | None
    value: float | None
    shown_before: str | None
    shown_after: str | None
    attempts: int


@dataclass
class Outcome:
    """What storing one send's result did, in deliveries."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0


class Outbox:
    """The outbox tables (`notification_cursor`, `_deliveries`, `_attempts`, `_channel_state`, `_totals`)."""

    def __init__(self, store: ControlStore) -> None:
        self.store = store

    # -- from events to deliveries ------------------------------------------------------------

    def cursor(self) -> int:
        """The id of the last alert event turned into deliveries."""
        with self.store.connect(write=False) as con:
            return int(con.execute("SELECT event_id FROM notification_cursor WHERE id = 1").fetchone()[0])

    def fan_out(self, after: int, changes: Sequence[AlertChange], channels: Sequence[StoredChannel],
                now: dt.datetime) -> int | None:
        """Queue `changes` (the events after `after`, in order) for the channels that take them.

        In one transaction that first checks the cursor still is `after` (else another notifier did it:
        returns None) and leaves it at the last change. Returns the number of deliveries queued.
        """
        if not changes:
            return 0
        stamp = iso(now)
        queued = 0
        with self.store.connect() as con:
            if con.execute("SELECT event_id FROM notification_cursor WHERE id = 1").fetchone()[0] != after:
                return None
            for change in changes:
                for channel in channels:
                    if change.event.id <= channel.since_event_id:
                        continue
                    before = _shown(con, channel.name, change.alert_id)
                    after_view = shown_after(channel, change, before)
                    if isinstance(after_view, Skip):
                        continue
                    e = change.event
                    queued += con.execute(
                        "INSERT OR IGNORE INTO notification_deliveries (event_id, channel, alert_id, kind, event_at,"
                        " severity, value, shown_before, shown_after, status, next_attempt_at, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                        (e.id, channel.name, change.alert_id, e.kind, iso(e.at), e.severity, e.value, before,
                         after_view, stamp, stamp),
                    ).rowcount
            con.execute("UPDATE notification_cursor SET event_id = ? WHERE id = 1", (changes[-1].event.id,))
        return queued

    # -- sending ------------------------------------------------------------------------------

    def heads(self) -> dict[str, tuple[dt.datetime, dt.datetime | None, dt.datetime]]:
        """Per channel with pending deliveries: (its oldest one's next attempt, last message sent, oldest event)."""
        with self.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT d.channel, d.next_attempt_at, s.last_sent_at,"
                " (SELECT min(event_at) FROM notification_deliveries o WHERE o.channel = d.channel"
                "  AND o.status = 'pending') AS oldest"
                " FROM notification_deliveries d LEFT JOIN notification_channel_state s ON s.channel = d.channel"
                " WHERE d.status = 'pending' AND d.event_id = (SELECT min(event_id) FROM notification_deliveries m"
                "  WHERE m.channel = d.channel AND m.status = 'pending')").fetchall()
        return {r["channel"]: (_time(r["next_attempt_at"]), _time(r["last_sent_at"]) if r["last_sent_at"] else None,
                               _time(r["oldest"])) for r in rows}

    def claim(self, channel: str, owner: str, now: dt.datetime, lease_seconds: float, min_interval: float,
              limit: int, hold: bool = False) -> list[Queued] | None:
        """Take the channel's sending lease and its due batch, in one transaction.

        The batch is the channel's oldest pending deliveries (up to `limit`), if the oldest is due and the
        channel's minimum interval since its last message has passed. Returns None when another live
        notifier holds the lease; an empty batch when nothing is due, the lease then taken only with `hold`.
        """
        with self.store.connect() as con:
            con.execute("INSERT INTO notification_channel_state (channel) VALUES (?) ON CONFLICT DO NOTHING",
                        (channel,))
            state = con.execute("SELECT * FROM notification_channel_state WHERE channel = ?", (channel,)).fetchone()
            if state["lease_owner"] not in (None, owner) and _time(state["lease_until"]) > now:
                return None
            batch = _due_batch(con, channel, state["last_sent_at"], now, min_interval, limit)
            if batch or hold:
                con.execute("UPDATE notification_channel_state SET lease_owner = ?, lease_until = ? WHERE channel = ?",
                            (owner, iso(now + dt.timedelta(seconds=lease_seconds)), channel))
        return batch

    def release(self, channel: str, owner: str) -> None:
        """Give the channel's lease back (if this owner still holds it)."""
        with self.store.connect() as con:
            con.execute("UPDATE notification_channel_state SET lease_owner = NULL, lease_until = NULL"
                        " WHERE channel = ? AND lease_owner = ?", (channel, owner))

    def complete(self, channel: str, owner: str, batch: Sequence[Queued], response: Response, now: dt.datetime,
                 max_attempts: int, backoff: Backoff, lease_seconds: float, release: bool = False,
                 next_batch: tuple[float, int] | None = None) -> tuple[Outcome, list[Queued]]:
        """Store how sending `batch` went: delivered, or each delivery retried later or dead-lettered; the
        lease is extended, or given back with `release`. With `next_batch` (min interval, limit) and the
        lease kept, the channel's next due batch is claimed in the same transaction (one commit per message).

        A receiver's permanent refusal, or a delivery's `max_attempts`-th failure, dead-letters it.
        Returns the outcome and the next batch (empty when none was asked for or none is due).
        """
        stamp = iso(now)
        outcome = Outcome()
        error = None if response.ok else response.describe()
        with self.store.connect() as con:
            for d in batch:
                attempt = d.attempts + 1
                if response.ok:
                    status, result, next_at = "delivered", "delivered", stamp
                    outcome.delivered += 1
                elif response.permanent or attempt >= max_attempts:
                    status, result, next_at = "dead", "dead", stamp
                    outcome.dead += 1
                else:
                    status, result = "pending", "retry"
                    next_at = iso(now + dt.timedelta(seconds=backoff(attempt, response.retry_after)))
                    outcome.failed += 1
                updated = con.execute(
                    "UPDATE notification_deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                    " finished_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END, last_status_code = ?,"
                    " last_error = ? WHERE id = ? AND status = 'pending'",
                    (status, attempt, next_at, status, stamp, response.status_code, error, d.id),
                ).rowcount
                if updated:
                    con.execute(
                        "INSERT INTO notification_attempts (delivery_id, channel, at, attempt, outcome, status_code,"
                        " latency_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (d.id, channel, stamp, attempt, result, response.status_code, response.latency_ms, error),
                    )
            for name, count in (("delivered", outcome.delivered), ("failed", outcome.failed), ("dead", outcome.dead)):
                if count:
                    _count(con, channel, name, count)
            state = con.execute(
                "UPDATE notification_channel_state SET lease_owner = CASE WHEN ? <> 0 THEN NULL ELSE lease_owner END,"
                " lease_until = CASE WHEN ? <> 0 THEN NULL ELSE ? END,"
                " last_sent_at = CASE WHEN ? <> 0 THEN ? ELSE last_sent_at END WHERE channel = ? AND lease_owner = ?"
                " RETURNING last_sent_at",
                (release, release, iso(now + dt.timedelta(seconds=lease_seconds)), response.ok, stamp, channel,
                 owner),
            ).fetchone()
            following: list[Queued] = []
            if next_batch is not None and not release and state is not None:
                following = _due_batch(con, channel, state["last_sent_at"], now, *next_batch)
        return outcome, following

    # -- alertmanager re-sends ----------------------------------------------------------------

    def resend_at(self, channel: str) -> dt.datetime | None:
        """When the channel's open alerts are next re-sent (None: no re-send scheduled yet)."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT resend_at FROM notification_channel_state WHERE channel = ?",
                              (channel,)).fetchone()
        return _time(row["resend_at"]) if row is not None and row["resend_at"] else None

    def shown(self, channel: str) -> dict[int, str]:
        """The alerts the channel's receiver shows firing, by what was delivered: {alert id: severity}."""
        with self.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT alert_id, shown_after FROM notification_deliveries d"
                " WHERE channel = ? AND status = 'delivered' AND event_id = (SELECT max(event_id)"
                "  FROM notification_deliveries m WHERE m.channel = d.channel AND m.alert_id = d.alert_id"
                "  AND m.status = 'delivered')", (channel,)).fetchall()
        return {r["alert_id"]: r["shown_after"] for r in rows if r["shown_after"] is not None}

    def resent(self, channel: str, response: Response | None, now: dt.datetime, next_at: dt.datetime) -> None:
        """Record a re-send (None: nothing was open to re-send) and when the next one is due."""
        with self.store.connect() as con:
            con.execute("INSERT INTO notification_channel_state (channel) VALUES (?) ON CONFLICT DO NOTHING",
                        (channel,))
            con.execute("UPDATE notification_channel_state SET resend_at = ? WHERE channel = ?",
                        (iso(next_at), channel))
            if response is not None:
                con.execute(
                    "INSERT INTO notification_attempts (delivery_id, channel, at, attempt, outcome, status_code,"
                    " latency_ms, error) VALUES (NULL, ?, ?, 1, ?, ?, ?, ?)",
                    (channel, iso(now), "resent" if response.ok else "resend_failed", response.status_code,
                     response.latency_ms, None if response.ok else response.describe()))
                _count(con, channel, "resent" if response.ok else "resend_failed", 1)

    # -- reading and re-driving ---------------------------------------------------------------

    def page(self, status: str | None = None, channel: str | None = None, alert_id: int | None = None,
             cursor: str | None = None, limit: int = 50) -> DeliveryPage:
        """Deliveries, newest first, filtered, `limit` at a time.

        Raises:
            InvalidParameter: an unknown status, a limit outside 1..500 or a cursor not from us.
        """
        if status is not None and status not in STATUSES:
            raise InvalidParameter(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameter(f"limit must be within 1..{MAX_LIMIT}")
        terms, params = ["1 = 1"], []
        for column, value in (("status", status), ("channel", channel), ("alert_id", alert_id)):
            if value is not None:
                terms.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            if not cursor.isdigit():
                raise InvalidParameter(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page")
            terms.append("id < ?")
            params.append(int(cursor))
        with self.store.connect(write=False) as con:
            rows = con.execute(f"SELECT * FROM notification_deliveries WHERE {' AND '.join(terms)}"
                               " ORDER BY id DESC LIMIT ?", [*params, limit + 1]).fetchall()
        found = [_delivery(r) for r in rows[:limit]]
        return DeliveryPage(deliveries=found, next_cursor=str(found[-1].id) if len(rows) > limit else None)

    def get(self, delivery_id: int) -> Delivery:
        """One delivery with every attempt. Raises NotFound."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM notification_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise NotFound(f"no notification delivery with id {delivery_id}")
            attempts = [DeliveryAttempt.model_validate(dict(a)) for a in con.execute(
                "SELECT id, at, attempt, outcome, status_code, latency_ms, error FROM notification_attempts"
                " WHERE delivery_id = ? ORDER BY id", (delivery_id,))]
        return _delivery(row, attempts)

    def retry(self, delivery_id: int, now: dt.datetime) -> Delivery:
        """Re-drive a dead delivery (a fresh set of attempts), or make a pending one due now.

        Raises:
            NotFound: no such delivery. Conflict: it was delivered (sending it again would be a duplicate)
            or its channel is gone.
        """
        with self.store.connect() as con:
            row = con.execute("SELECT status FROM notification_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise NotFound(f"no notification delivery with id {delivery_id}")
            if row["status"] in ("delivered", "cancelled"):
                raise Conflict(f"delivery {delivery_id} is {row['status']}; only dead or pending deliveries are "
                               "retried")
            con.execute("UPDATE notification_deliveries SET status = 'pending', next_attempt_at = ?,"
                        " attempts = CASE WHEN status = 'dead' THEN 0 ELSE attempts END, finished_at = NULL"
                        " WHERE id = ?", (iso(now), delivery_id))
        return self.get(delivery_id)

    def retry_dead(self, channel: str | None, now: dt.datetime) -> int:
        """Re-drive every dead delivery (of one channel, or of all); returns how many."""
        with self.store.connect() as con:
            return con.execute(
                "UPDATE notification_deliveries SET status = 'pending', next_attempt_at = ?, attempts = 0,"
                " finished_at = NULL WHERE status = 'dead' AND (? IS NULL OR channel = ?)",
                (iso(now), channel, channel)).rowcount

    def cancel(self, channel: str, now: dt.datetime) -> int:
        """A deleted channel: its pending and dead deliveries are cancelled, its state dropped."""
        with self.store.connect() as con:
            con.execute("DELETE FROM notification_channel_state WHERE channel = ?", (channel,))
            return con.execute(
                "UPDATE notification_deliveries SET status = 'cancelled', finished_at = ?"
                " WHERE channel = ? AND status IN ('pending', 'dead')", (iso(now), channel)).rowcount

    def history(self, alert_id: int) -> list[AlertEvent]:
        """Notification entries of an alert's history: each delivery, and its first and dead-lettering failures."""
        with self.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT a.id, a.at, a.attempt, a.outcome, a.status_code, a.latency_ms, a.error, d.id AS delivery_id,"
                " d.event_id, d.channel, d.kind, d.severity, d.value FROM notification_attempts a"
                " JOIN notification_deliveries d ON d.id = a.delivery_id WHERE d.alert_id = ?"
                " AND (a.outcome IN ('delivered', 'dead') OR (a.outcome = 'retry' AND a.attempt = 1)) ORDER BY a.id",
                (alert_id,)).fetchall()
        return [AlertEvent(id=r["id"], at=r["at"], kind="notified" if r["outcome"] == "delivered" else "notify_failed",
                           actor="notifier", note=_note(r), severity=r["severity"], value=r["value"],
                           event_id=r["event_id"], channel=r["channel"], delivery_id=r["delivery_id"]) for r in rows]

    def totals(self) -> dict[tuple[str, str], int]:
        """Deliveries (and re-sends) ever counted, by (channel, outcome)."""
        with self.store.connect(write=False) as con:
            return {(r["channel"], r["outcome"]): r["count"]
                    for r in con.execute("SELECT * FROM notification_totals")}

    def counts(self) -> dict[tuple[str, str], int]:
        """Deliveries now, by (channel, status)."""
        with self.store.connect(write=False) as con:
            return {(r[0], r[1]): r[2] for r in con.execute(
                "SELECT channel, status, count(*) FROM notification_deliveries GROUP BY 1, 2")}


def _due_batch(con: sqlite3.Connection, channel: str, last_sent_at: str | None, now: dt.datetime,
               min_interval: float, limit: int) -> list[Queued]:
    """The channel's oldest pending deliveries if the oldest is due and its minimum interval has passed."""
    if min_interval and last_sent_at and _time(last_sent_at) + dt.timedelta(seconds=min_interval) > now:
        return []
    rows = con.execute("SELECT * FROM notification_deliveries WHERE channel = ? AND status = 'pending'"
                       " ORDER BY event_id LIMIT ?", (channel, limit)).fetchall()
    if not rows or _time(rows[0]["next_attempt_at"]) > now:
        return []
    return [Queued(r["id"], r["event_id"], r["alert_id"], r["kind"], _time(r["event_at"]), r["severity"], r["value"],
                   r["shown_before"], r["shown_after"], r["attempts"]) for r in rows]


def _shown(con: sqlite3.Connection, channel: str, alert_id: int) -> str | None:
    row = con.execute(
        "SELECT shown_after FROM notification_deliveries WHERE channel = ? AND alert_id = ? AND status <> 'cancelled'"
        " ORDER BY event_id DESC LIMIT 1", (channel, alert_id)).fetchone()
    return row["shown_after"] if row else None


def _count(con: sqlite3.Connection, channel: str, outcome: str, count: int) -> None:
    con.execute("INSERT INTO notification_totals (channel, outcome, count) VALUES (?, ?, ?)"
                " ON CONFLICT (channel, outcome) DO UPDATE SET count = notification_totals.count + excluded.count",
                (channel, outcome, count))


def _note(row: sqlite3.Row) -> str:
    answer = f"HTTP {row['status_code']}" if row["status_code"] is not None else (row["error"] or "no answer")
    if row["outcome"] == "delivered":
        return f"{row['kind']} delivered to {row['channel']!r}: {answer} in {row['latency_ms'] or 0:.0f} ms"
    if row["outcome"] == "dead":
        return f"{row['kind']} to {row['channel']!r} dead-lettered after {row['attempt']} attempt(s): {row['error']}"
    return f"{row['kind']} to {row['channel']!r} failed: {row['error']}; retrying"


def _delivery(row: sqlite3.Row, attempts: Iterable[DeliveryAttempt] = ()) -> Delivery:
    data = {k: row[k] for k in row.keys() if k not in ("shown_before", "shown_after")}  # noqa: SIM118
    if data["status"] != "pending":
        data["next_attempt_at"] = None
    return Delivery.model_validate({**data, "attempt_log": list(attempts)})


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
