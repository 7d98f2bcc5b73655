"""Rollups: the lake tables every stats answer for closed time is read from, kept current.

Four tables, one file per day each, recomputed whole and published atomically:

- `rollups_hourly`: hour x master x key x model x provider x provider key x status class, with exact
  counts and BIGINT sums (the grain holds the ids, so distinct masters and keys stay exact);
- `latency_hourly`: hour x dimension (gateway, master, key, model, provider, provider key) x id x
  log-scale bucket: mergeable latency and ttft histograms, percentiles within 1 %;
- `rollups_daily` and `latency_daily`: the same merged to whole days, built for closed days, so a
  month of reads opens ~30 small files.

Keeping them current uses the ingest ledger: every committed batch lists the UTC hours it touched.
`refresh` recomputes exactly those hours from raw records (the rest of the day's rows are kept),
publishes the day's files, and only then moves its watermark past the batches, so an hour is served
from rollups only once they hold every batch committed into it. Hours of batches past the
watermark are "dirty": readers take them from raw records instead.

Rollups outlive the raw records: once the log cleaner has dropped a day's partition
(`engine.partitions.PartitionDrops`), the raw records of that day are only those that arrived after the
drop. Its hours are then recomputed as the rows the rollups held at the drop (`rollups_base` and
`latency_base`, taken by the first recompute after it) plus the rows of those later records. That
keeps a recompute idempotent, so a redone batch (a crash before the watermark moved, a batch that
held the watermark back) or late files merged by compaction are still counted exactly once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from engine import catalog, queries
from engine.infra import Infra
from engine.partitions import PartitionDrops
from engine.stats import histogram_counts
from engine.tables import (
    HIST_SCHEMA,
    LATENCY_BASE,
    LATENCY_DAILY,
    LATENCY_HOURLY,
    ROLLUP_SCHEMA,
    ROLLUPS_BASE,
    ROLLUPS_DAILY,
    ROLLUPS_HOURLY,
)
from engine.times import HOUR, midnight

WATERMARK = "rollups_hourly"


@dataclass(frozen=True)
class Pending:
    """What the ledger says is not yet in the rollups."""

    watermark: int          # the ledger position the rollups cover
    last: int               # the highest committed position seen (the next watermark when all publish)
    hours: frozenset[dt.datetime]  # hours of committed batches past the watermark


class Rollups:
    """Maintains the rollup tables from the raw records and the ingest ledger."""

    def __init__(self, infra: Infra, drops: PartitionDrops) -> None:
        self.infra = infra
        self.drops = drops
        # The committed prefix of the ledger past the watermark, as last read: every stats request asks
        # `pending`, and between two refreshes thousands of batches pile up, so each call reads only the
        # ledger past this prefix instead of parsing every pending batch again.
        self._settled = Pending(-1, -1, frozenset())
        self._settled_lock = threading.Lock()

    def pending(self) -> Pending:
        """Committed batches the rollups do not hold yet, and the hours they touched."""
        with self.infra.store.connect(write=False) as con:
            row = con.execute("SELECT value FROM stats_watermarks WHERE name = ?", (WATERMARK,)).fetchone()
        mark = row["value"] if row else 0
        settled = self._settled
        if settled.watermark != mark:  # a refresh moved the watermark (here or in another process)
            settled = Pending(mark, mark, frozenset())
        hours: set[dt.datetime] = set(settled.hours)
        prefix_hours = set(settled.hours)
        last = settled.last
        blocked = False
        for entry in self.infra.lake.ledger_after(settled.last):
            if not entry.committed:
                # A batch still publishing (or left by a crashed writer) holds the watermark back, so
                # the batches after it are redone until it commits; recomputing is idempotent.
                blocked = True
                continue
            hours.update(entry.hours)
            if not blocked:
                last = entry.position
                prefix_hours.update(entry.hours)
        if last != settled.last:
            # Entries up to `last` are committed, and a committed batch stays so: they need no second
            # reading. The ones after a batch still publishing are read again next time.
            prefix = Pending(mark, last, frozenset(prefix_hours))
            with self._settled_lock:
                if self._settled.watermark != mark or self._settled.last < last:
                    self._settled = prefix
        return Pending(mark, last, frozenset(hours))

    def refresh(self, now: dt.datetime) -> list[dt.date]:
        """Recompute every hour dirtied since the watermark and advance it; returns the days rewritten.

        Also builds the daily tier of closed days that lack it (the day just ended, typically).
        """
        today = now.astimezone(dt.UTC).date()
        with self.lock():
            todo = self.pending()
            by_day: dict[dt.date, set[dt.datetime]] = {}
            for hour in todo.hours:
                by_day.setdefault(hour.date(), set()).add(hour)
            missing = set(self.days()) - set(self.daily_days())
            # The scheduled job runs beside ingest and stats requests: few DuckDB threads (EZ_JOB_THREADS).
            threads = self.infra.settings.job_threads
            con = self.infra.connect(threads)
            try:
                for day in sorted(by_day):
                    self.recompute(day, by_day[day], con)
                    if day < today and self.infra.lake.has_day(ROLLUPS_HOURLY, day):
                        self.build_daily(day, threads)  # a closed day: its daily tier follows
                for day in sorted(missing - set(by_day)):
                    if day < today:
                        self.build_daily(day, threads)
            finally:
                con.close()
            with self.infra.store.connect() as con_:
                con_.execute(
                    "INSERT INTO stats_watermarks (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (WATERMARK, todo.last),
                )
        return sorted(by_day)

    def recompute(self, day: dt.date, hours: Iterable[dt.datetime] | None = None,
                  con: duckdb.DuckDBPyConnection | None = None, closed: bool = False) -> int:
        """Recompute some hours of a day (all 24 when None) from raw records and publish the day's files.

        For a day whose raw partition the log cleaner dropped, the hours are the rows the rollups held
        at the drop plus the raw records that arrived since (see the module docstring). With `closed`,
        the day's daily tier is rebuilt too. Returns the number of hourly rollup rows the day has
        afterwards. The caller holds `lock()`.
        """
        wanted = sorted(hours) if hours is not None else [midnight(day) + i * HOUR for i in range(24)]
        own = con is None
        con = con or self.infra.connect()
        try:
            span = {"day": day, "start": wanted[0], "end": wanted[-1] + HOUR, "hours": wanted}
            fresh_rows, fresh_hist = self._fresh(con, span)
            rows = self._merge(con, fresh_rows, "rollup_keep", span, hours is not None, ROLLUP_SCHEMA)
            hist = self._merge(con, fresh_hist, "latency_keep", span, hours is not None, HIST_SCHEMA)
            if rows.num_rows == 0 and not self.infra.lake.has_day(ROLLUPS_HOURLY, day):
                return 0
            # Histograms first: a reader that sees the new counts file also finds matching histograms.
            self.infra.lake.publish_file(hist, LATENCY_HOURLY.file(day))
            self.infra.lake.publish_file(rows, ROLLUPS_HOURLY.file(day))
            self._bump(wanted)
            if closed:
                self.build_daily(day)
            return rows.num_rows
        finally:
            if own:
                con.close()

    def _bump(self, hours: list[dt.datetime]) -> None:
        version = time.time_ns()
        with self.infra.store.connect() as con:
            con.executemany(
                "INSERT INTO rollup_hour_versions (hour, version) VALUES (?, ?)"
                " ON CONFLICT (hour) DO UPDATE SET version = excluded.version",
                [(h.isoformat(), version) for h in hours],
            )

    def versions(self, start: dt.datetime, end: dt.datetime) -> tuple[tuple[str, int], ...]:
        """The versions of the rolled-up hours in [start, end): equal versions, equal rollup rows."""
        with self.infra.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT hour, version FROM rollup_hour_versions WHERE hour >= ? AND hour < ? ORDER BY hour",
                (start.isoformat(), end.isoformat()),
            ).fetchall()
        return tuple((r["hour"], r["version"]) for r in rows)

    def build_daily(self, day: dt.date, threads: int | None = None) -> None:
        """Merge a closed day's hourly files into its daily tier files (DuckDB on `threads`, None: all cores)."""
        # A fresh connection: one opened before the hourly files existed has empty views of them.
        con = self.infra.connect(threads)
        try:
            rows = queries.run(con, "rollup_day", day=day).select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
            hist = queries.run(con, "latency_day", day=day).select(HIST_SCHEMA.names).cast(HIST_SCHEMA)
        finally:
            con.close()
        self.infra.lake.publish_file(hist, LATENCY_DAILY.file(day))
        self.infra.lake.publish_file(rows, ROLLUPS_DAILY.file(day))

    def _fresh(self, con: duckdb.DuckDBPyConnection, span: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
        """The recomputed rollup and histogram rows of the span's hours."""
        rows = queries.run(con, "rollup_hours", **span)
        hist = histogram_counts.count(queries.run(con, "latency_records", **span))
        drops = self.drops.days().get(span["day"])
        if drops is None:
            return rows, hist
        self._ensure_base(con, span["day"], drops)
        con.register("rollup_fresh", rows)
        con.register("latency_fresh", hist)
        try:
            added = {"day": span["day"], "hours": span["hours"]}
            return queries.run(con, "rollup_add", **added), queries.run(con, "latency_add", **added)
        finally:
            con.unregister("rollup_fresh")
            con.unregister("latency_fresh")

    def _ensure_base(self, con: duckdb.DuckDBPyConnection, day: dt.date, drops: int) -> None:
        """Take a dropped day's base files unless taken since its latest drop; point `con` at them.

        The first recompute after a drop takes them from the day's hourly rows, which then still hold
        exactly the dropped records: only a recompute writes those rows, and it comes here first.
        """
        with self.infra.store.connect(write=False) as state:
            row = state.execute("SELECT drops FROM rollup_bases WHERE date = ?", (day.isoformat(),)).fetchone()
        if row is None or row["drops"] != drops:
            every_hour: dict[str, Any] = {"day": day, "hours": []}
            rows = queries.run(con, "rollup_keep", **every_hour).select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
            hist = queries.run(con, "latency_keep", **every_hour).select(HIST_SCHEMA.names).cast(HIST_SCHEMA)
            self.infra.lake.publish_file(hist, LATENCY_BASE.file(day))
            self.infra.lake.publish_file(rows, ROLLUPS_BASE.file(day))
            # Recorded only once both files are in place: a crash before this retakes them, from the
            # same hourly rows, since the day's rollups are published after this returns.
            with self.infra.store.connect() as state:
                state.execute(
                    "INSERT INTO rollup_bases (date, drops) VALUES (?, ?)"
                    " ON CONFLICT (date) DO UPDATE SET drops = excluded.drops",
                    (day.isoformat(), drops),
                )
        # A view made before the table had a file reads an empty stand-in: bind them afresh.
        catalog.register(con, ROLLUPS_BASE, self.infra.data_dir, self.infra.lake.objects)
        catalog.register(con, LATENCY_BASE, self.infra.data_dir, self.infra.lake.objects)

    @staticmethod
    def _merge(con: duckdb.DuckDBPyConnection, fresh: pa.Table, keep_query: str, span: dict[str, Any],
               partial: bool, schema: pa.Schema) -> pa.Table:
        fresh = fresh.select(schema.names).cast(schema)
        if not partial:
            return fresh
        kept = queries.run(con, keep_query, day=span["day"], hours=span["hours"])
        if kept.num_rows == 0:
            return fresh
        return pa.concat_tables([kept.select(schema.names).cast(schema), fresh]).sort_by([("hour", "ascending")])

    def days(self) -> list[dt.date]:
        """The days that have hourly rollups."""
        return self.infra.lake.days(ROLLUPS_HOURLY)

    def daily_days(self) -> list[dt.date]:
        """The days that have the daily tier."""
        return self.infra.lake.days(ROLLUPS_DAILY)

    def lock(self) -> AbstractContextManager[bool]:
        """One rollup writer at a time across processes (the scheduler's refresh, a backfill, the cleaner)."""
        return self.infra.exclusive("rollups", self.infra.settings.staging_dir / ".rollups.lock", wait=True)

