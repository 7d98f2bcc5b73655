"""Key quotas: a limit in quota units per key, a reset period, and usage computed from the lake.

A key's period at `now` is the calendar period containing it (UTC day, ISO week from Monday, month
from the 1st), starting later only if the key was reset by hand inside it; a `never` quota counts from
its last reset (by default: all retained history). Usage is therefore right even before the reset job
has advanced `last_reset_at`; the job makes each reset durable and records the closed period's usage
in `quota_resets`, once per key and period.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from engine.errors import InvalidParameter, NotFound
from engine.infra import Infra
from engine.schedules import JobOutcome
from engine.times import INT64_MAX, check_id, check_instant, iso

#: The registry's display names of one section's ids (`Registry.names`).
NameLookup = Callable[[str, Iterable[int]], dict[int, str]]
#: Each key's exact sum of quota_cost over [its start, end) (`Stats.quota_cost`: rollups plus raw records).
CostSums = Callable[[dict[int, dt.datetime], dt.datetime], dict[int, int]]

PERIODS = ("daily", "weekly", "monthly", "never")
#: Where a `never` quota counts from unless told otherwise: all the history the lake retains.
NEVER_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class KeyQuota(BaseModel):
    """A key's quota as stored."""

    model_config = ConfigDict(frozen=True)

    key_id: int
    quota_limit: int = Field(description="Quota units allowed per period (compared with sum(quota_cost)).")
    reset_period: Literal["daily", "weekly", "monthly", "never"]
    last_reset_at: dt.datetime = Field(description="Start of the current period (a reset by hand, or the job's).")
    updated_at: dt.datetime


class QuotaUsage(BaseModel):
    """A key's usage in its current period: `used` is the exact sum of quota_cost since `period_start`."""

    model_config = ConfigDict(frozen=True)

    key_id: int
    key_name: str | None = Field(None, description="The key's name in the registry, if it has one.")
    quota_limit: int
    used: int = Field(description="Exact sum of quota_cost since period_start.")
    period_start: dt.datetime
    reset_period: Literal["daily", "weekly", "monthly", "never"] = "never"

    @computed_field(description="Quota units left in the period (0 when over).")  # type: ignore[prop-decorator]
    @property
    def remaining(self) -> int:
        return max(self.quota_limit - self.used, 0)

    @computed_field(description="used / quota_limit (1.0 and above: at or over quota).")  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float:
        return self.used / self.quota_limit

    @computed_field(description="When the current period ends (the next reset); null for `never`.")  # type: ignore[prop-decorator]
    @property
    def period_end(self) -> dt.datetime | None:
        return period_end(self.reset_period, self.period_start)


def period_floor(period: str, now: dt.datetime) -> dt.datetime | None:
    """The start of the calendar period containing `now` (UTC), or None for `never`."""
    day = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    if period == "daily":
        return day
    if period == "weekly":
        return day - dt.timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return None


def period_end(period: str, start: dt.datetime) -> dt.datetime | None:
    """When the period starting at or containing `start` ends (the next reset), or None for `never`."""
    floor = period_floor(period, start)
    if floor is None:
        return None
    if period == "daily":
        return floor + dt.timedelta(days=1)
    if period == "weekly":
        return floor + dt.timedelta(days=7)
    return (floor + dt.timedelta(days=32)).replace(day=1)


class Quotas:
    """The quota registry (`engine.quotas`): owns `key_quotas` and `quota_resets`."""

    def __init__(self, infra: Infra, names: NameLookup, costs: CostSums) -> None:
        self.infra = infra
        self.names = names
        self.costs = costs

    def forget_deleted(self, con: sqlite3.Connection, section: str, entity_id: int) -> None:
        """A registry deletion hook (`Registry.on_delete`): a deleted key loses its quota, so it stops raising
        quota alerts; its records stay in the lake."""
        if section == "keys":
            con.execute("DELETE FROM key_quotas WHERE key_id = ?", (entity_id,))

    def get(self, key_id: int) -> KeyQuota:
        """One key's quota.

        Raises:
            NotFound: the key has no quota.
        """
        check_id(key_id, "key_id")
        with self.infra.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM key_quotas WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"key {key_id} has no quota")
        return _quota(row)

    def list_all(self) -> list[KeyQuota]:
        """Every quota, by key id."""
        with self.infra.store.connect(write=False) as con:
            return [_quota(row) for row in con.execute("SELECT * FROM key_quotas ORDER BY key_id")]

    def put(self, key_id: int, quota_limit: int, reset_period: str,
            last_reset_at: dt.datetime | None = None) -> KeyQuota:
        """Set a key's quota.

        A new quota's period starts at the current calendar period (daily, weekly, monthly) or counts
        all retained history (never), unless `last_reset_at` (a manual reset) is given; changing only
        the limit keeps `last_reset_at`, changing the period starts the new period's.

        Raises:
            InvalidParameter: key_id or quota_limit not positive, unknown period, last_reset_at in the future.
        """
        now = self.infra.now()
        if not 0 < key_id <= INT64_MAX or not 0 < quota_limit <= INT64_MAX:
            raise InvalidParameter(f"key_id and quota_limit must be positive 64-bit integers (at most {INT64_MAX})")
        if reset_period not in PERIODS:
            raise InvalidParameter(f"reset_period must be one of {', '.join(PERIODS)}, got {reset_period!r}")
        if last_reset_at is not None:
            last_reset_at = check_instant(last_reset_at, "last_reset_at")
        if last_reset_at is not None and last_reset_at > now:
            raise InvalidParameter("last_reset_at must be a UTC time that is not in the future")
        start = last_reset_at or period_floor(reset_period, now) or NEVER_START
        with self.infra.store.connect() as con:
            con.execute(
                "INSERT INTO key_quotas (key_id, quota_limit, reset_period, last_reset_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET quota_limit = excluded.quota_limit, "
                "reset_period = excluded.reset_period, updated_at = excluded.updated_at, last_reset_at = "
                + ("excluded.last_reset_at" if last_reset_at else
                   "CASE WHEN key_quotas.reset_period = excluded.reset_period THEN key_quotas.last_reset_at "
                   "ELSE excluded.last_reset_at END"),
                (key_id, quota_limit, reset_period, iso(start), iso(now)),
            )
        return self.get(key_id)

    def seed(self, quotas: dict[int, tuple[int, str]]) -> int:
        """Set the quotas of keys that have none (e.g. the demo's); returns how many were added."""
        have = {q.key_id for q in self.list_all()}
        for key_id, (limit, period) in sorted(quotas.items()):
            if key_id not in have:
                self.put(key_id, limit, period)
        return len(set(quotas) - have)

    def delete(self, key_id: int) -> None:
        """Remove a key's quota (its history stays in the lake).

        Raises:
            NotFound: the key has no quota.
        """
        check_id(key_id, "key_id")
        with self.infra.store.connect() as con:
            if con.execute("DELETE FROM key_quotas WHERE key_id = ?", (key_id,)).rowcount == 0:
                raise NotFound(f"key {key_id} has no quota")

    def usage(self, now: dt.datetime, key_ids: list[int] | None = None) -> list[QuotaUsage]:
        """Every quota's (or the given keys') usage in its current period at `now`, exact (rollups for the
        hours they hold, raw records for the rest: a few tens of ms on a month of data)."""
        quotas = [q for q in self.list_all() if key_ids is None or q.key_id in key_ids]
        starts = {q.key_id: current_start(q, now) for q in quotas}
        used = self._sums(starts, now)
        names = self.names("keys", starts)
        return [QuotaUsage(key_id=q.key_id, key_name=names.get(q.key_id), quota_limit=q.quota_limit,
                           used=used.get(q.key_id, 0), period_start=starts[q.key_id], reset_period=q.reset_period)
                for q in quotas]

    def key_usage(self, key_id: int, now: dt.datetime) -> QuotaUsage:
        """One key's usage in its current period.

        Raises:
            NotFound: the key has no quota.
        """
        self.get(key_id)
        return self.usage(now, [key_id])[0]

    def over(self, ratio: float, now: dt.datetime) -> list[QuotaUsage]:
        """Keys whose usage is at least `ratio` of their quota, highest ratio first."""
        if ratio < 0:
            raise InvalidParameter("over must be >= 0")
        hits = [u for u in self.usage(now) if u.used >= ratio * u.quota_limit]
        return sorted(hits, key=lambda u: (-u.ratio, u.key_id))

    def reset_due(self, now: dt.datetime) -> JobOutcome:
        """The quota_reset job: start the current period of every key whose last reset is before it.

        A key's `last_reset_at` moves to the period boundary (not to `now`), so a late run resets exactly
        as an on-time one would, and after downtime each key is reset once, to the current period.
        """
        due = [(q, boundary) for q in self.list_all()
               if (boundary := period_floor(q.reset_period, now)) is not None and q.last_reset_at < boundary]
        if not due:
            return JobOutcome(message="no quota period ended")
        closed: dict[int, int] = {}
        for end in sorted({b for _, b in due}):  # closed periods end at their own boundaries
            closed.update(self._sums({q.key_id: q.last_reset_at for q, b in due if b == end}, end))
        done = 0
        with self.infra.store.connect() as con:
            for quota, boundary in due:
                # Guarded on the old value: a concurrent reset or a PUT in between wins, no double reset.
                changed = con.execute(
                    "UPDATE key_quotas SET last_reset_at = ? WHERE key_id = ? AND last_reset_at = ?",
                    (iso(boundary), quota.key_id, iso(quota.last_reset_at)),
                ).rowcount
                if changed:
                    con.execute("INSERT OR IGNORE INTO quota_resets VALUES (?, ?, ?, ?, ?)",
                                (quota.key_id, iso(boundary), iso(quota.last_reset_at),
                                 closed.get(quota.key_id, 0), iso(now)))
                    done += changed
        return JobOutcome(rows=done, message=f"reset {done} key quota(s)",
                          details={"keys": [q.key_id for q, _ in due]})

    def resets(self, key_id: int) -> list[dict[str, object]]:
        """The reset history of a key, newest first: each closed period's start, end and usage."""
        with self.infra.store.connect(write=False) as con:
            rows = con.execute("SELECT * FROM quota_resets WHERE key_id = ? ORDER BY period_start DESC",
                               (key_id,)).fetchall()
        return [dict(row) for row in rows]

    def _sums(self, starts: dict[int, dt.datetime], end: dt.datetime) -> dict[int, int]:
        return self.costs(starts, end) if starts else {}


def current_start(quota: KeyQuota, now: dt.datetime) -> dt.datetime:
    """Where the key's period containing `now` starts: the calendar period's start, or a manual reset
    inside it; for `never`, the last reset. Works for any `now`, so past moments can be evaluated too."""
    floor = period_floor(quota.reset_period, now)
    if floor is None:
        return quota.last_reset_at
    return quota.last_reset_at if floor <= quota.last_reset_at <= now else floor


def _quota(row: sqlite3.Row) -> KeyQuota:
    return KeyQuota.model_validate(dict(row))
