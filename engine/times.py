"""Time in ezstats: the clock, the one stored text form of an instant, UTC days and hours."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable

from engine.errors import InvalidParameter

Clock = Callable[[], dt.datetime]
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
#: The range every record's created_at must fall in (SPEC), and so every day and instant a caller names:
#: epoch seconds sent as milliseconds land in 1970, and dates near year 1 or 9999 overflow arithmetic.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
#: The largest id (and count) ezstats stores: SQLite's and Parquet's int64.
INT64_MAX = 2**63 - 1


def utc_now() -> dt.datetime:
    """The real clock; tests inject their own."""
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """The stored text form of an instant: ISO 8601 in UTC with microseconds, so text order is time order.

    Raises:
        ValueError: a naive datetime (ezstats times are UTC-aware).
    """
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: ezstats times are UTC-aware")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def parse_iso(text: str | None) -> dt.datetime | None:
    """An instant stored by `iso` (or any ISO text with an offset) back as an aware datetime; None stays None."""
    return dt.datetime.fromisoformat(text) if text else None


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A caller's instant in UTC.

    Raises:
        InvalidParameter: it has no offset, so it could be any instant.
    """
    if moment.tzinfo is None:
        raise InvalidParameter(f"{moment.isoformat()} has no time zone; give UTC (e.g. 2026-01-01T00:00:00Z)")
    return moment.astimezone(dt.UTC)


def check_day(day: dt.date, name: str) -> dt.date:
    """A caller's day, if it is in the record range.

    Raises:
        InvalidParameter: before 2000-01-01 or after 2099-12-31; the message names `name`.
    """
    if not EARLIEST.date() <= day < LATEST.date():
        raise InvalidParameter(f"{name} must be between {EARLIEST.date()} and {LATEST.date() - DAY}, got {day}")
    return day


def check_instant(moment: dt.datetime, name: str) -> dt.datetime:
    """A caller's instant in UTC, if it has an offset and is in the record range.

    Raises:
        InvalidParameter: no offset, or outside [2000-01-01, 2100-01-01) UTC; the message names `name`.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidParameter(f"{name}: {moment.isoformat()} has no offset; give one (e.g. 2026-01-01T00:00:00Z)")
    if not EARLIEST <= moment < LATEST:  # compared as instants: no conversion that could overflow
        raise InvalidParameter(f"{name} must be within {EARLIEST.date()}..{LATEST.date()} (UTC), got "
                               f"{moment.isoformat()}")
    return moment.astimezone(dt.UTC)


def check_id(value: int | None, name: str) -> int | None:
    """An id (or any stored integer) as the int64 it is stored as; None stays None.

    Raises:
        InvalidParameter: beyond int64.
    """
    if value is not None and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise InvalidParameter(f"{name} must fit a 64-bit integer (at most {INT64_MAX}), got {value}")
    return value


def midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of a day."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def floor_hour(moment: dt.datetime) -> dt.datetime:
    """The start of the hour holding an instant."""
    return moment.replace(minute=0, second=0, microsecond=0)


def retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - now).total_seconds(), 0.0)
