"""Time zones of requests (`tz`): IANA names, local days and hours as UTC instants, and the UTC offsets
that queries use to label records with their local day or hour.

Stored times are UTC; a request may name a zone, and then its periods and its day/hour buckets follow
that zone, DST included. Python's `zoneinfo` (with the `tzdata` package, so every IANA name works on
any machine) is the one source of offsets: queries get the offsets in force over a period as two
lists (`Offsets`), never a zone name, so SQL and Python cannot disagree about a zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import InvalidParameter

UTC_NAME = "UTC"
#: Before any record; the first entry of every offset list starts here.
DAWN = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
_STEP = dt.timedelta(hours=6)  # offsets are sampled this often; no zone changes twice within it
_QUARTER = dt.timedelta(minutes=15)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name (`UTC`, `Asia/Shanghai`, `America/New_York`...).

    Raises:
        InvalidParameter: not a zone name.
    """
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        raise InvalidParameter(f"unknown time zone {name!r}; use an IANA name such as UTC or Asia/Shanghai")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter(f"unknown time zone {name!r}; use an IANA name such as UTC or Asia/Shanghai") from None


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first instant (in UTC) of a local calendar day.

    Where a zone skips midnight (a DST change at 00:00), the day starts at the change, when the local
    clock jumps past it.
    """
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def local_day(moment: dt.datetime, tz: ZoneInfo) -> dt.date:
    """The local calendar day an instant falls in."""
    return moment.astimezone(tz).date()


def day_starts(start: dt.datetime, end: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
    """The starts of the local days that overlap [start, end), the first one at or before `start`."""
    out = []
    day = local_day(start, tz)
    while (at := local_midnight(day, tz)) < end:
        out.append(at)
        day += dt.timedelta(days=1)
    return out


def hour_starts(start: dt.datetime, end: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
    """The starts of the local hours that overlap [start, end), the first one at or before `start`.

    A local hour starts where the local clock reads hh:00. In most zones that is a UTC hour; in zones
    30 or 45 minutes off UTC it is not, and across a DST change an hour can be repeated or skipped.
    """
    out = []
    at = hour_floor(start, tz)
    while at < end:
        # Every offset is a multiple of 15 minutes, so a local hh:00 is a UTC :00, :15, :30 or :45.
        if at.astimezone(tz).minute == 0:
            out.append(at)
        at += _QUARTER
    return out


def hour_floor(moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The start of the local hour an instant falls in, as a UTC instant."""
    local = moment.astimezone(tz)
    return (moment - dt.timedelta(minutes=local.minute, seconds=local.second,
                                  microseconds=local.microsecond)).astimezone(dt.UTC)


@dataclass(frozen=True)
class Offsets:
    """A zone's UTC offsets over a span: `offsets[i]` (seconds east of UTC) is in force from `starts[i]`.

    `starts[0]` is DAWN, so every instant has an offset: the one of the last start at or before it.
    """

    starts: tuple[dt.datetime, ...]
    offsets: tuple[int, ...]

    def params(self) -> dict[str, object]:
        """As query parameters ($tz_starts, $tz_offsets; see sql/stats_sources.sql)."""
        return {"tz_starts": list(self.starts), "tz_offsets": list(self.offsets)}

    @property
    def whole_hours(self) -> bool:
        """Whether every offset is a whole number of hours, so local hours are UTC hours."""
        return all(o % 3600 == 0 for o in self.offsets)


#: The offsets of UTC.
UTC_OFFSETS = Offsets((DAWN,), (0,))


def offsets(tz: ZoneInfo, start: dt.datetime, end: dt.datetime) -> Offsets:
    """The offsets in force over [start, end) (and, before `start`, the first of them), each change found
    to the second."""
    at = max(start, DAWN + _STEP)
    found_starts, found = [DAWN], [_offset(tz, at)]
    while at < end:
        nxt = min(at + _STEP, end)
        if _offset(tz, nxt) != found[-1]:
            lo, hi = at, nxt  # offset(lo) is the last one found, offset(hi) is new: bisect to the second
            while hi - lo > dt.timedelta(seconds=1):
                mid = (lo + (hi - lo) / 2).replace(microsecond=0)
                if _offset(tz, mid) == found[-1]:
                    lo = mid
                else:
                    hi = mid
            found_starts.append(hi)
            found.append(_offset(tz, hi))
        at = nxt
    return Offsets(tuple(found_starts), tuple(found))


def _offset(tz: ZoneInfo, moment: dt.datetime) -> int:
    delta = moment.astimezone(tz).utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0
