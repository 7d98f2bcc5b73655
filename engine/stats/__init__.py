"""Stats: hourly rollups, immutable daily stats, period queries and backfill (the `engine.stats` domain)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from engine import zones
from engine.errors import InvalidParameter, LimitExceeded
from engine.executors import Executor, LocalExecutor, open_executor
from engine.infra import Infra
from engine.partitions import PartitionDrops
from engine.quarantine import Quarantine
from engine.settings import Settings
from engine.stats import periods
from engine.stats.answers import DailyStat, DailyStats, PeriodStats, SeriesStats
from engine.stats.daily import GRAINS, Daily, closed
from engine.stats.reader import GROUP_BYS, INTERVALS, SERIES_METRICS, Filters, NameLookup, Reader
from engine.stats.rollups import Rollups
from engine.stats.topn import TopN
from engine.stats.usage import KeyUsage
from engine.tables import LOG_RECORDS
from engine.times import DAY, check_day, midnight, utc_now

__all__ = ["GRAINS", "GROUP_BYS", "INTERVALS", "SERIES_METRICS", "DayResult", "Filters", "Stats", "TopN"]

#: The filter that names each daily grain's own id.
_GRAIN_FILTER = {"master": "master_id", "key": "key_id", "model": "model", "provider": "provider_id",
                 "provider_key": "provider_key_id"}


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


@dataclass(frozen=True)
class _BackfillPlan:
    """What a backfill decided before its days run: the same for every task, wherever it runs."""

    now: dt.datetime
    late: frozenset[dt.date]
    raw_days: frozenset[dt.date]
    rolled: frozenset[dt.date]
    dropped: frozenset[dt.date]
    force: bool
    dry_run: bool


def _failed_day(day: dt.date, exc: BaseException) -> DayResult:
    return DayResult(day, ok=False, daily="failed", error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class BackfillDay:
    """A backfill day as a task for a remote worker: it opens the lake and control store of `settings` there
    (once per worker process) and runs `Stats.backfill_day`."""

    settings: Settings
    plan: _BackfillPlan

    def __call__(self, day: dt.date) -> DayResult:
        """Run the day on this worker."""
        return _worker_stats(self.settings).backfill_day(day, self.plan)


#: One Stats per lake in a worker process: a worker runs many days, each reusing its connections.
_WORKER_STATS: dict[str, Stats] = {}


def _worker_stats(settings: Settings) -> Stats:
    key = settings.model_dump_json()
    if key not in _WORKER_STATS:
        infra = Infra.open(settings, utc_now)
        _WORKER_STATS[key] = Stats(infra, PartitionDrops(infra.store), Quarantine(infra.store, infra.data_dir),
                                   names=lambda kind, ids: {})
    return _WORKER_STATS[key]


class Stats:
    """The stats domain of an engine: `engine.stats`."""

    def __init__(self, infra: Infra, drops: PartitionDrops, quarantine: Quarantine, names: NameLookup) -> None:
        """`names` gives the registry's display names of ids (`Registry.names`), for group rows; `quarantine`
        says which hours lost records to a repair."""
        self.infra = infra
        self.drops = drops
        self.names = names
        self.rollups = Rollups(infra, drops)
        self.daily = Daily(infra, self.rollups)
        self.reader = Reader(infra, self.rollups, names, lost_hours=quarantine.lost_hours)
        self.usage = KeyUsage(self.rollups, self.reader.connection)

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
        executor: Executor | None = None,
    ) -> list[DayResult]:
        """Recompute rollups and daily stats of [first, last] from the raw records; idempotent.

        Each day is one task of `executor` (default: EZ_EXECUTOR; `local` runs them here, in order; on a
        Dask cluster each worker opens the same lake and control store and runs the same SQL): a day's
        files are each published whole, so a worker dying mid-day leaves the day's old or new files, never a
        part of one, and a rerun of the range repairs it.

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
        plan = _BackfillPlan(now or self.infra.now(), frozenset(self.daily.late_days()), frozenset(self.raw_days()),
                             frozenset(self.rollups.days()), frozenset(self.drops.days()), force, dry_run)
        days = [first + i * DAY for i in range((last - first).days + 1)]
        executor = executor or open_executor(self.infra.settings.executor)
        task: Callable[[dt.date], DayResult]
        if isinstance(executor, LocalExecutor):
            task = functools.partial(self.backfill_day, plan=plan)
        else:
            task = BackfillDay(self.infra.settings, plan)
        return executor.map(task, days, failed=_failed_day, done=progress)

    def backfill_day(self, day: dt.date, plan: _BackfillPlan) -> DayResult:
        """One day of a backfill (see `backfill`): the task an executor runs."""
        result = DayResult(day)
        try:
            if day not in plan.raw_days and day not in plan.rolled:
                result.daily = "no records"
            else:
                self._backfill_day(result, day in plan.raw_days, day in plan.dropped, plan.force or day in plan.late,
                                   plan.dry_run, plan.now)
        except Exception as exc:  # one bad day must not stop the others; the summary names it
            return _failed_day(day, exc)
        return result

    def _backfill_day(self, result: DayResult, has_raw: bool, dropped: bool, rewrite: bool, dry_run: bool,
                      now: dt.datetime) -> None:
        day = result.day
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
        return self.infra.lake.days(LOG_RECORDS)

    # -- reads --------------------------------------------------------------------------------

    def zone(self, tz: str | None = None) -> ZoneInfo:
        """The zone a request named, or `EZ_DEFAULT_TZ`. Raises InvalidParameter for an unknown name."""
        return zones.zone(tz or self.infra.settings.default_tz)

    def quota_cost(self, starts: dict[int, dt.datetime], end: dt.datetime) -> dict[int, int]:
        """Each key's exact sum of quota_cost over [its start, end), from rollups plus raw records; see
        `engine.stats.usage`."""
        return self.usage.sums(starts, end)

    def period(self, name: str, first: dt.date | None = None, last: dt.date | None = None,
               now: dt.datetime | None = None, tz: str | None = None) -> periods.Period:
        """Resolve a period name at `now` (default: the engine clock) in a zone (default `EZ_DEFAULT_TZ`);
        `all` starts at the local midnight before the first data day.

        Raises:
            InvalidParameter: see `periods.resolve`. LimitExceeded: a custom period over EZ_STATS_MAX_DAYS days.
        """
        now = now or self.infra.now()
        zone = self.zone(tz)
        period = periods.resolve(name, now, first, last, zone)
        most = self.infra.settings.stats_max_days
        if name == "custom" and first is not None and last is not None and (last - first).days + 1 > most:
            raise LimitExceeded(
                f"a custom period spans at most {most} days (EZ_STATS_MAX_DAYS); {first}..{last} spans "
                f"{(last - first).days + 1}: ask a shorter range, or /admin/stats/daily for a long history")
        if name == "all":
            days = self.raw_days() + self.rollups.days()
            start = zones.local_midnight(zones.local_day(midnight(min(days)), zone), zone) if days else now
            period = periods.Period(name, min(start, now), now, zone)
        return period

    def read(self, period: str = "today", first: dt.date | None = None, last: dt.date | None = None,
             filters: Filters | None = None, group_by: str | None = None, source: str = "auto",
             tz: str | None = None, top: TopN | None = None) -> PeriodStats:
        """Stats of a period (SPEC metrics, groups, top models) in a zone; see `Reader.read`.

        Raises:
            InvalidParameter: unknown period, zone, group_by, source or sort; custom without dates; from > to.
        """
        return self.reader.read(self.period(period, first, last, tz=tz), filters or Filters(), group_by, source, top)

    def series(self, period: str, interval: str, metric: str, group_by: str | None = None,
               first: dt.date | None = None, last: dt.date | None = None, filters: Filters | None = None,
               source: str = "auto", tz: str | None = None, top: TopN | None = None) -> SeriesStats:
        """One metric per local hour or day (and group) over a period; see `Reader.series`."""
        return self.reader.series(self.period(period, first, last, tz=tz), filters or Filters(), interval, metric,
                                  group_by, source, top)

    def read_daily(self, first: dt.date | None = None, last: dt.date | None = None,
                   master_id: int | None = None, grain: str | None = None, filters: Filters | None = None,
                   tz: str | None = None) -> DailyStats:
        """Stored daily stats rows of [first, last] (default: the 30 days before today in `tz`) at one grain.

        Daily stats are UTC days, always; `tz` only decides which day is today for the default range.
        The grain defaults to the one of the single id filter given (`master_id` alone: master rows),
        else gateway. A filter narrows the rows of its own grain (key_id with grain key); a row at one
        grain carries no breakdown by another, so other filters are refused.

        Raises:
            InvalidParameter: first is after last; an unknown grain or zone; a filter another grain's.
        """
        filters = filters or Filters()
        if master_id is not None:
            filters = dataclasses.replace(filters, master_id=master_id)
        given = filters.to_dict()
        if grain is None:
            grain = next((g for g, f in _GRAIN_FILTER.items() if f in given), "gateway") if len(given) <= 1 else None
            if grain is None:
                raise InvalidParameter(f"several filters ({', '.join(given)}): give grain= and the filter of "
                                       "that grain")
        if grain not in GRAINS:
            raise InvalidParameter(f"unknown grain {grain!r}; use one of {', '.join(GRAINS)}")
        stray = [f for f in given if f != _GRAIN_FILTER.get(grain)]
        if stray:
            raise InvalidParameter(f"daily stats at grain {grain} are per {grain} only; {', '.join(stray)} "
                                   f"filters the grain {', '.join(g for g, f in _GRAIN_FILTER.items() if f in stray)}")
        today = zones.local_day(self.infra.now(), self.zone(tz))
        for day, param in ((first, "from"), (last, "to")):
            if day is not None:
                check_day(day, param)
        filters.check()
        last = last or today - DAY
        first = first or min(last, today - 30 * DAY)
        if first > last:
            raise InvalidParameter(f"from ({first}) is after to ({last})")
        rows = self.daily.read(first, last, grain, given)
        column = _GRAIN_FILTER.get(grain, "")
        names = self.names(_SECTIONS[grain], [r[column] for r in rows]) if grain in _SECTIONS else {}
        days = []
        for row in rows:
            group = row.get(column)
            name = names.get(group) if group is not None else None
            days.append(DailyStat.model_validate({**row, "group": group, "name": name}))
        return DailyStats(start=first, end=last, tz=self.zone(tz).key, grain=grain, filters=given,
                          master_id=filters.master_id, days=days)


#: The registry section of each daily grain's ids.
_SECTIONS = {"master": "masters", "key": "keys", "provider": "providers", "provider_key": "provider_keys"}
