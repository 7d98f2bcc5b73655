"""What a scheduled job is: its schedule (fixed interval or cron, UTC), its callable and its outcome."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter
from pydantic import BaseModel

from engine.errors import InvalidParameter

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TINY = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """When a job fires, in UTC: every `interval` seconds (aligned on the epoch) or on a cron expression.

    Interval ticks are aligned on the epoch rather than on process start, so every process on the
    same data agrees on which tick is due, and a tick can be claimed once across all of them.
    """

    text: str
    interval: int | None = None
    cron: str | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """`"60"` or `"60s"` (seconds), or a 5-field cron expression such as `"5 0 * * *"`.

        Raises:
            InvalidParameter: neither a positive number of seconds nor a valid cron expression.
        """
        spec = text.strip()
        seconds = spec[:-1] if spec.endswith("s") else spec
        if seconds.isdigit():
            if int(seconds) <= 0:
                raise InvalidParameter(f"schedule interval must be positive, got {text!r}")
            return cls(spec, interval=int(seconds))
        if len(spec.split()) == 5 and croniter.is_valid(spec):
            return cls(spec, cron=spec)
        raise InvalidParameter(f"schedule {text!r} is neither seconds (e.g. '60') nor a cron expression "
                               "(e.g. '5 0 * * *')")

    def previous(self, now: dt.datetime) -> dt.datetime:
        """The latest fire time at or before `now`."""
        if self.interval is not None:
            elapsed = (now - _EPOCH) // dt.timedelta(seconds=self.interval)
            return _EPOCH + elapsed * dt.timedelta(seconds=self.interval)
        # croniter's get_prev excludes its start, so start just after `now` to include it.
        return croniter(self.cron, (now + _TINY).astimezone(dt.UTC)).get_prev(dt.datetime)

    def next(self, now: dt.datetime) -> dt.datetime:
        """The first fire time strictly after `now`."""
        if self.interval is not None:
            return self.previous(now) + dt.timedelta(seconds=self.interval)
        return croniter(self.cron, now.astimezone(dt.UTC)).get_next(dt.datetime)


@dataclass(frozen=True)
class JobOutcome:
    """What one run did: rows it touched, a one-line message and JSON-ready details."""

    rows: int = 0
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: object) -> JobOutcome:
        """Adapt what a job's callable returned (an outcome, a row count, a dataclass, None)."""
        if isinstance(value, JobOutcome):
            return value
        if value is None:
            return cls()
        if isinstance(value, bool):
            return cls(message=str(value))
        if isinstance(value, int):
            return cls(rows=value)
        if isinstance(value, BaseModel) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            details = (value.model_dump(mode="json") if isinstance(value, BaseModel)
                       else dataclasses.asdict(value))  # type: ignore[arg-type]
            rows = next((details[k] for k in ("rows", "records", "rows_written", "observations")
                         if isinstance(details.get(k), int)), 0)
            return cls(rows=rows, message=str(value)[:500], details=details)
        return cls(message=str(value)[:500])


@dataclass(frozen=True)
class JobSpec:
    """A job the scheduler runs: `run(now)` does the work; `dry_run(now)` (optional) only says what it would do."""

    name: str
    schedule: Schedule
    run: Callable[[dt.datetime], object]
    description: str = ""
    dry_run: Callable[[dt.datetime], JobOutcome] | None = None
