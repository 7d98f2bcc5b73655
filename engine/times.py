"""Time in ezstats: the clock, the one stored text form of an instant, UTC days and hours."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from engine.errors import InvalidParameter

Clock = Callable[[], dt.datetime]
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


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


def midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of a day."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def floor_hour(moment: dt.datetime) -> dt.datetime:
    """The start of the hour holding an instant."""
    return moment.replace(minute=0, second=0, microsecond=0)
