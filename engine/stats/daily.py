"""Daily stats: immutable per-day statistics at the grains a dashboard needs, the long-term history.

`daily_stats/date=YYYY-MM-DD/daily.parquet` is written once a day is closed and its rollups hold every
batch committed into it, and is never rewritten, except by `backfill` (for a day with recorded late
data, or with `--force`). The log cleaner relies on this: a file in `daily_stats/date=D/` means day D
is summarized and its raw records may go. Late data (a batch committed into a summarized day) is
recorded in `daily_stats_late`, so the day is not silently changed and `backfill` knows to fix it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from engine import queries
from engine.infra import Infra
from engine.stats.rollups import Rollups
from engine.tables import DAILY_SCHEMA, DAILY_STATS
from engine.times import DAY, iso, midnight

GRAINS = ("gateway", "master", "key", "model", "provider", "provider_key")
TOP_MODELS = 10


class Daily:
    """Computes, stores and reads the daily stats table."""

    def __init__(self, infra: Infra, rollups: Rollups) -> None:
        self.infra = infra
        self.rollups = rollups

    def exists(self, day: dt.date) -> bool:
        """Whether the day's stats are written (the log cleaner's 'summarized' test)."""
        return self.infra.lake.has_day(DAILY_STATS, day)

    def days(self) -> list[dt.date]:
        """Days whose stats are written."""
        return self.infra.lake.days(DAILY_STATS)

    def compute(self, day: dt.date, threads: int | None = None) -> pa.Table:
        """The day's stats rows from its daily rollups (built first if missing); nothing else is written.

        DuckDB runs on `threads` (None: every core)."""
        if day not in self.rollups.daily_days():
            self.rollups.build_daily(day, threads)
        con = self.infra.connect(threads)
        try:
            table = queries.run(con, "daily_stats", day=day, top=TOP_MODELS)
        finally:
            con.close()
        return table.select(DAILY_SCHEMA.names).cast(DAILY_SCHEMA)

    def write(self, day: dt.date, threads: int | None = None) -> int:
        """Compute and publish a day's stats (replacing any), clear its late mark; returns the row count.

        The caller holds the rollups lock, so no refresh changes the day's rollups meanwhile. DuckDB runs
        on `threads` (None: every core).
        """
        table = self.compute(day, threads)
        self.infra.lake.publish_file(table, DAILY_STATS.file(day))
        with self.infra.store.connect() as con:
            con.execute("DELETE FROM daily_stats_late WHERE date = ?", (day.isoformat(),))
        return table.num_rows

    def due(self, now: dt.datetime) -> list[dt.date]:
        """Closed days (past the settle delay) that have rollups but no stats yet, oldest first."""
        last_closed = (now - dt.timedelta(seconds=self.infra.settings.daily_stats_delay_seconds)).date() - DAY
        written = set(self.days())
        return [d for d in self.rollups.days() if d <= last_closed and d not in written]

    def run(self, now: dt.datetime) -> list[dt.date]:
        """The daily job: write every due day whose rollups are complete; returns the days written.

        The caller refreshes the rollups first (see `Stats.run_daily`).
        """
        done = []
        with self.rollups.lock():
            pending_days = {h.date() for h in self.rollups.pending().hours}
            for day in self.due(now):
                if day in pending_days:
                    continue  # a batch landed after the refresh; the next run writes it
                self.write(day, self.infra.settings.job_threads)  # a job: few cores (EZ_JOB_THREADS)
                done.append(day)
        return done

    def note_late(self, days: list[dt.date], now: dt.datetime) -> list[dt.date]:
        """Record which of these just-refreshed days already have stats: their rows are now stale."""
        late = [d for d in days if self.exists(d)]
        stamp = iso(now)
        with self.infra.store.connect() as con:
            for day in late:
                con.execute(
                    "INSERT INTO daily_stats_late (date, first_seen_at, last_seen_at, refreshes)"
                    " VALUES (?, ?, ?, 1) ON CONFLICT (date) DO UPDATE SET"
                    " last_seen_at = excluded.last_seen_at, refreshes = refreshes + 1",
                    (day.isoformat(), stamp, stamp),
                )
        return late

    def late_days(self) -> list[dt.date]:
        """Summarized days that received records since their stats were written."""
        with self.infra.store.connect(write=False) as con:
            rows = con.execute("SELECT date FROM daily_stats_late ORDER BY date").fetchall()
        return [dt.date.fromisoformat(r["date"]) for r in rows]

    def read(self, first: dt.date, last: dt.date, grain: str = "gateway", filters: dict[str, Any] | None = None
             ) -> list[dict[str, Any]]:
        """Stored rows of [first, last] at one grain, narrowed by equality `filters` on its id columns,
        each with `late_data`."""
        if not self.infra.lake.has_files(DAILY_STATS):
            return []
        filters = filters or {}
        con = self.infra.connect()
        try:
            table = queries.run(con, "daily_stats_read", first=first, last=last, grain=grain,
                                **{name: filters.get(name) for name in _FILTERS})
        finally:
            con.close()
        late = set(self.late_days())
        return [{**row, "late_data": row["date"] in late} for row in table.to_pylist()]


#: The id columns daily rows can be filtered on.
_FILTERS = ("master_id", "key_id", "model", "provider_id", "provider_key_id")


def closed(day: dt.date, now: dt.datetime) -> bool:
    """Whether a UTC day is over at `now`."""
    return midnight(day + DAY) <= now


