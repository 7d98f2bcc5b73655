"""Periods of the stats API (SPEC "Periods"): names resolved to half-open UTC intervals at a given now."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from engine.errors import InvalidParameter
from engine.times import check_day, midnight

PERIODS = ("today", "week", "month", "last7d", "last30d", "all", "custom")

#: `all` starts here: before any record a gateway can have sent.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Period:
    """A named period resolved to `[start, end)` in UTC."""

    name: str
    start: dt.datetime
    end: dt.datetime

    @property
    def days(self) -> list[dt.date]:
        """The UTC days the period touches, in order."""
        first, last = self.start.date(), (self.end - dt.timedelta(microseconds=1)).date()
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)] if self.end > self.start else []


def resolve(name: str, now: dt.datetime, start: dt.date | None = None, end: dt.date | None = None) -> Period:
    """Turn a period name (and, for `custom`, its inclusive first and last day) into `[start, end)`.

    Args:
        name: one of PERIODS.
        now: the request time (timezone-aware); periods other than custom end at it.
        start, end: the first and last day of a custom period, both included.

    Raises:
        InvalidParameter: unknown name, custom without both days, or start after end.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(dt.UTC)
    today = now.date()
    if name == "custom":
        if start is None or end is None:
            raise InvalidParameter("period=custom needs both from and to (YYYY-MM-DD)")
        check_day(start, "from")
        check_day(end, "to")
        if start > end:
            raise InvalidParameter(f"from ({start}) is after to ({end})")
        return Period(name, midnight(start), midnight(end + dt.timedelta(days=1)))
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
        return Period(name, EPOCH, now)
    if name not in firsts:
        raise InvalidParameter(f"unknown period {name!r}; use one of {', '.join(PERIODS)}")
    return Period(name, midnight(firsts[name]), now)
