"""Stats: hourly rollups, immutable daily stats, period queries and backfill (the `engine.stats` domain)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidParameter, LimitExceeded
from engine.infra import Infra
from engine.partitions import PartitionDrops
from engine.quarantine import Quarantine
from engine.stats import periods
from engine.stats.answers import DailyStats, PeriodStats, SeriesStats
from engine.stats.daily import GRAINS, Daily, closed
from engine.stats.reader import GROUP_BYS, INTERVALS, SERIES_METRICS, Filters, Reader
from engine.stats.rollups import Rollups
from engine.tables import LOG_RECORDS
from engine.times import DAY, check_day, check_id, midnight

__all__ = ["GRAINS", "GROUP_BYS", "INTERVALS", "SERIES_METRICS", "DayResult", "Filters", "Stats"]


@dataclass
class DayResult:
    """What backfill did for one day."""

    day: dt.date
    ok: bool = True
    rollup_rows: int | None = None
    daily: str = "skipped"   # written | kept | open day | no records | would write | failed
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)   # e.g. why the rollups were kept

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"day": self.day.isoformat(), "ok": self.ok, "rollup_rows": self.rollup_rows,
                "daily": self.daily, "error": self.error, "details": self.details}


class Stats:
    """The stats domain of an engine: `engine.stats`."""

    def __init__(self, infra: Infra, drops: PartitionDrops, quarantine: Quarantine) -> None:
        self.infra = infra
        self.drops = drops
        self.rollups = Rollups(infra, drops)
        self.daily = Daily(infra, self.rollups)
        self.reader = Reader(infra, self.rollups, lost_hours=quarantine.lost_hours)

    # -- jobs ---------------------------------------------------------------------------------

    def refresh_rollups(self, now: dt.datetime) -> int:
        """Bring the hourly rollups up to date with every committed batch; returns the days rewritten.

        The scheduler calls it every minute. A rewritten day that already has daily stats is recorded
        as late (see `late_days`); its stats row is not changed until `backfill`.
        """
        days = self.rollups.refresh(now)
        self.daily.note_late(days, now)
        return len(days)

    def run_daily(self, now: dt.datetime) -> int:
        """The daily stats job (seed DailyStatsJob, 00:05 UTC): write yesterday and every missing closed day.

        Returns how many days were written. Written days are never rewritten here.
        """
        self.refresh_rollups(now)
        return len(self.daily.run(now))

    def late_days(self) -> list[dt.date]:
        """Summarized days that received records after their daily stats were written."""
        return self.daily.late_days()

    def backfill(
        self,
        first: dt.date,
        last: dt.date,
        force: bool = False,
        dry_run: bool = False,
        now: dt.datetime | None = None,
        progress: Callable[[DayResult], None] | None = None,
    ) -> list[DayResult]:
        """Recompute rollups and daily stats of [first, last] from the raw records; idempotent.

        A day's rollups are rebuilt from its raw records. A day without raw records keeps its rollups
        (they outlive log retention), and so does a day whose raw partition the log cleaner dropped: its
        raw records are only those that arrived since, which the rollup refresh adds (its `details` say
        so). Its daily stats are written when the day is closed and they are missing or marked late, or
        always with `force`. A failing day is reported, not fatal.

        Raises:
            InvalidParameter: first is after last.
        """
        if first > last:
            raise InvalidParameter(f"from ({first}) is after to ({last})")
        now = now or self.infra.now()
        late = set(self.daily.late_days())
        raw_days = set(self.raw_days())
        dropped = set(self.drops.days())
        results = []
        for i in range((last - first).days + 1):
            day = first + i * DAY
            result = DayResult(day)
            try:
                self._backfill_day(result, day in raw_days, day in dropped, force or day in late, dry_run, now)
            except Exception as exc:  # one bad day must not stop the others; the summary names it
                result.ok, result.daily, result.error = False, "failed", f"{type(exc).__name__}: {exc}"
            results.append(result)
            if progress:
                progress(result)
        return results

    def _backfill_day(self, result: DayResult, has_raw: bool, dropped: bool, rewrite: bool, dry_run: bool,
                      now: dt.datetime) -> None:
        day = result.day
        if not has_raw and day not in set(self.rollups.days()):
            result.daily = "no records"
            return
        if dropped:
            result.details["rollups"] = ("kept: the raw records of this day were dropped by log retention; "
                                         "records that arrived since are added by the rollup refresh")
        is_closed = closed(day, now)
        write_daily = is_closed and (rewrite or not self.daily.exists(day))
        if dry_run:
            result.daily = "would write" if write_daily else ("open day" if not is_closed else "kept")
            return
        with self.rollups.lock():
            if has_raw and not dropped:
                result.rollup_rows = self.rollups.recompute(day, closed=is_closed)
            if write_daily:
                self.daily.write(day)
        result.daily = "written" if write_daily else ("open day" if not is_closed else "kept")

    def raw_days(self) -> list[dt.date]:
        """Days with raw log record files."""
        return LOG_RECORDS.days(self.infra.data_dir)

    # -- reads --------------------------------------------------------------------------------

    def period(self, name: str, first: dt.date | None = None, last: dt.date | None = None,
               now: dt.datetime | None = None) -> periods.Period:
        """Resolve a period name at `now` (default: the engine clock); `all` starts at the first data day.

        Raises:
            InvalidParameter: see `periods.resolve`. LimitExceeded: a custom period over EZ_STATS_MAX_DAYS days.
        """
        now = now or self.infra.now()
        period = periods.resolve(name, now, first, last)
        most = self.infra.settings.stats_max_days
        if name == "custom" and first is not None and last is not None and (last - first).days + 1 > most:
            raise LimitExceeded(
                f"a custom period spans at most {most} days (EZ_STATS_MAX_DAYS); {first}..{last} spans "
                f"{(last - first).days + 1}: ask a shorter range, or /admin/stats/daily for a long history")
        if name == "all":
            days = self.raw_days() + self.rollups.days()
            start = midnight(min(days)) if days else now
            period = periods.Period(name, min(start, now), now)
        return period

    def read(self, period: str = "today", first: dt.date | None = None, last: dt.date | None = None,
             filters: Filters | None = None, group_by: str | None = None, source: str = "auto"
             ) -> PeriodStats:
        """Stats of a period (SPEC metrics, groups, top models); see `Reader.read`.

        Raises:
            InvalidParameter: unknown period, group_by or source; custom without dates; from > to.
        """
        return self.reader.read(self.period(period, first, last), filters or Filters(), group_by, source)

    def series(self, period: str, interval: str, metric: str, group_by: str | None = None,
               first: dt.date | None = None, last: dt.date | None = None, filters: Filters | None = None,
               source: str = "auto") -> SeriesStats:
        """One metric per hour or day (and group) over a period; see `Reader.series`."""
        return self.reader.series(self.period(period, first, last), filters or Filters(), interval, metric,
                                  group_by, source)

    def read_daily(self, first: dt.date | None = None, last: dt.date | None = None,
                   master_id: int | None = None) -> DailyStats:
        """Stored daily stats of [first, last] (default: the 30 days before today): gateway or one master's rows.

        Raises:
            InvalidParameter: first is after last.
        """
        today = self.infra.now().date()
        for day, name in ((first, "from"), (last, "to")):
            if day is not None:
                check_day(day, name)
        check_id(master_id, "master_id")
        last = last or today - DAY
        first = first or min(last, today - 30 * DAY)
        if first > last:
            raise InvalidParameter(f"from ({first}) is after to ({last})")
        rows = self.daily.read(first, last, "gateway" if master_id is None else "master", master_id)
        return DailyStats(start=first, end=last, master_id=master_id, days=rows)
