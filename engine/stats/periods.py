"""Periods of the stats API (SPEC "Periods"): names resolved to half-open intervals at a given now, in a
time zone (UTC unless the request names another, see `engine.zones`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from engine import zones
from engine.errors import InvalidParameter
from engine.times import check_day

PERIODS = ("today", "week", "month", "last7d", "last30d", "all", "custom")

#: `all` starts here: before any record a gateway can have sent.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
UTC = zones.zone(zones.UTC_NAME)


@dataclass(frozen=True)
class Period:
    """A named period resolved to `[start, end)` (UTC instants) in a zone, whose local days it follows."""

    name: str
    start: dt.datetime
    end: dt.datetime
    tz: ZoneInfo = field(default=UTC)

    @property
    def days(self) -> list[dt.date]:
        """The UTC days the period touches, in order."""
        first, last = self.start.date(), (self.end - dt.timedelta(microseconds=1)).date()
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)] if self.end > self.start else []

    @property
    def tz_name(self) -> str:
        """The zone's IANA name."""
        return self.tz.key


def resolve(name: str, now: dt.datetime, start: dt.date | None = None, end: dt.date | None = None,
            tz: ZoneInfo = UTC) -> Period:
    """Turn a period name (and, for `custom`, its inclusive first and last day) into `[start, end)`.

    Days are local days of `tz`: `today` starts at its local midnight, `week` on its local Monday, a
    custom period at the local midnight of its first day and ends at the one after its last (a DST
    day is 23 or 25 hours long).

    Args:
        name: one of PERIODS.
        now: the request time (timezone-aware); periods other than custom end at it.
        start, end: the first and last day of a custom period, both included.
        tz: the zone whose days the period follows.

    Raises:
        InvalidParameter: unknown name, custom without both days, or start after end.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(dt.UTC)
    today = zones.local_day(now, tz)
    if name == "custom":
        if start is None or end is None:
            raise InvalidParameter("period=custom needs both from and to (YYYY-MM-DD)")
        check_day(start, "from")
        check_day(end, "to")
        if start > end:
            raise InvalidParameter(f"from ({start}) is after to ({end})")
        return Period(name, zones.local_midnight(start, tz), zones.local_midnight(end + dt.timedelta(days=1), tz), tz)
    if start is not None or end is not None:
        raise InvalidParameter(f"from and to are only allowed with period=custom, not period={name}")
    firsts = {
        "today": today,
        "week": today - dt.timedelta(days=today.weekday()),
        "month": today.replace(day=1),
        "last7d": today - dt.timedelta(days=6),
        "last30d": today - dt.timedelta(days=29),
    }
    if name == "all":
        return Period(name, EPOCH, now, tz)
    if name not in firsts:
        raise InvalidParameter(f"unknown period {name!r}; use one of {', '.join(PERIODS)}")
    return Period(name, zones.local_midnight(firsts[name], tz), now, tz)
