"""Rollups: the lake tables every stats answer for closed time is read from, kept current.

Four tables, one file per day each, recomputed whole and published atomically:

- `rollups_hourly`: hour x master x key x model x provider x provider key x status class, with exact
  counts and BIGINT sums (the grain holds the ids, so distinct masters and keys stay exact);
- `latency_hourly`: hour x dimension (gateway, master, key, model, provider, provider key) x id x
  log-scale bucket: mergeable latency and ttft histograms, percentiles within 1 %;
- `rollups_daily` and `latency_daily`: the same merged to whole days, built for closed days, so a
  month of reads opens ~30 small files.

Keeping them current uses the ingest ledger: every committed batch lists the UTC hours it touched.
`refresh` brings exactly those hours up to date from raw records (the rest of the day's rows are kept),
publishes the day's files, and only then moves its watermark past the batches, so an hour is served
from rollups only once they hold every batch committed into it. Hours of batches past the
watermark are "dirty": readers take them from raw records instead.

A refresh reads only what is new where it can: each process remembers, per day, the raw files its last
refresh read and the versions it published the hours with. While those files are all still there and no
one has rewritten those hours since, the next refresh reads only the files published meanwhile and adds
their rows to the stored ones (`rollup_add`, `latency_add` over `rollups_hourly`), so a refresh each minute
costs the minute's records, not the open hour's. Any other dirty hour (never read, rewritten elsewhere, or whose files a
compaction swap, a repair or the cleaner replaced) is recomputed from every file of the same listing.

Rollups outlive the raw records: once the log cleaner has dropped a day's partition
(`engine.partitions.PartitionDrops`), the raw records of that day are only those that arrived after the
drop. Its hours are then recomputed as the rows the rollups held at the drop (`rollups_base` and
`latency_base`, taken by the first recompute after it) plus the rows of those later records (the same
`rollup_add`, `latency_add`). That
keeps a recompute idempotent, so a redone batch (a crash before the watermark moved, a batch that
held the watermark back) or late files merged by compaction are still counted exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from engine import catalog, queries
from engine.errors import LakeDamaged, QueryError
from engine.infra import Infra
from engine.partitions import PartitionDrops
from engine.stats import histogram_counts
from engine.tables import (
    HIST_SCHEMA,
    LATENCY_BASE,
    LATENCY_DAILY,
    LATENCY_HOURLY,
    LOG_RECORDS,
    ROLLUP_SCHEMA,
    ROLLUPS_BASE,
    ROLLUPS_DAILY,
    ROLLUPS_HOURLY,
    LakeTable,
)
from engine.times import HOUR, midnight

log = logging.getLogger(__name__)

WATERMARK = "rollups_hourly"
DAYS_FOLDED = 4  # days whose folded files a process remembers (today, yesterday's late records, ...)


@dataclass(frozen=True)
class Pending:
    """What the ledger says is not yet in the rollups."""

    watermark: int          # the ledger position the rollups cover
    last: int               # the highest committed position seen (the next watermark when all publish)
    hours: frozenset[dt.datetime]  # hours of committed batches past the watermark


@dataclass(frozen=True)
class Folded:
    """Hours of one day whose published rollup rows are exactly the records of some raw files: what the
    refresh of this process last wrote, so the next one need only read the files published since."""

    files: frozenset[str]          # the partition's file names that were read
    versions: dict[str, int]       # ISO hour -> the version published with its rows (rollup_hour_versions)


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
        self._folded: dict[dt.date, Folded] = {}  # read and written under `lock()`

    def pending(self) -> Pending:
        """Committed batches the rollups do not hold yet, and the hours they touched."""
        with self.infra.store.connect(write=False) as con:
            row = con.execute("SELECT value FROM stats_watermarks WHERE name = ?", (WATERMARK,)).fetchone()
        mark = row["value"] if row else 0
        settled = self._settled
        # On a shared (PostgreSQL) store, ledger ids from a sequence may become visible out of order, so
        # a batch could appear below a prefix already read: read from the watermark every time there.
        if settled.watermark != mark or self.infra.store.shared:  # or a refresh moved the watermark
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
        if last != settled.last and not self.infra.store.shared:
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
                    self._refresh_day(day, by_day[day], con, threads)
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

    def _refresh_day(self, day: dt.date, hours: set[dt.datetime], con: duckdb.DuckDBPyConnection,
                     threads: int) -> None:
        """Bring the dirty `hours` of a day up to date, reading only files published since the last refresh
        where this process knows what the published rows hold, and every file of the others.

        Exact: an hour is folded only while its rows are those this process published from a known set of
        files (its version unchanged, none of the files gone: a compaction swap, a repair or the cleaner
        remove files and end it); any other dirty hour is recomputed from every file of the partition, read
        from the same listing. Days on object storage or whose raw partition the cleaner dropped take the
        plain recompute.
        """
        listed = None if self.infra.lake.objects is not None or day in self.drops.days() else self._listing(day)
        if listed is None:
            self._folded.pop(day, None)
            self.recompute(day, hours, con)
            return
        known = self._still_folded(day, listed)
        new = sorted(listed - known.files) if known is not None else []
        tracked = sorted(dt.datetime.fromisoformat(h) for h in known.versions) if known is not None else []
        full = sorted(h for h in hours if h.isoformat() not in (known.versions if known else {}))
        if not full and not new:  # the dirty hours' batches are in files already folded
            return
        try:
            versions = self._fold(day, listed, new, tracked, full, threads)
        except (QueryError, LakeDamaged, duckdb.Error) as exc:  # e.g. a file compacted away after the listing
            log.info("rollups of %s: folding new files failed (%s); recomputing the hours", day, exc)
            self._folded.pop(day, None)
            self.recompute(day, hours, con)
            return
        kept = known.versions if known is not None else {}
        self._folded[day] = Folded(listed, {**kept, **versions})
        for old in sorted(self._folded)[:-DAYS_FOLDED]:
            del self._folded[old]

    def _listing(self, day: dt.date) -> frozenset[str] | None:
        """The names of a day's raw files, or None without a partition folder."""
        try:
            names = os.listdir(LOG_RECORDS.partition_dir(self.infra.data_dir, day))
        except FileNotFoundError:
            return None
        return frozenset(n for n in names if n.endswith(".parquet"))

    def _still_folded(self, day: dt.date, listed: frozenset[str]) -> Folded | None:
        """What this process folded of a day, if it still holds: every file still there, and only the hours
        nobody has recomputed since (another process, a backfill, a repair)."""
        known = self._folded.get(day)
        if known is None or not known.files <= listed:
            return None
        start = midnight(day)
        stored = dict(self.versions(start, start + 24 * HOUR))
        versions = {h: v for h, v in known.versions.items() if stored.get(h) == v}
        return Folded(known.files, versions) if versions else None

    def _fold(self, day: dt.date, listed: frozenset[str], new: list[str], tracked: list[dt.datetime],
              full: list[dt.datetime], threads: int) -> dict[str, int]:
        """Publish a day's rows with the `new` files folded into the `tracked` hours and the `full` hours
        recomputed from every `listed` file; returns the versions of the hours it changed."""
        folder = LOG_RECORDS.partition_dir(self.infra.data_dir, day)
        con = self.infra.connect(threads)
        try:
            parts: list[tuple[pa.Table, pa.Table]] = []
            changed: list[dt.datetime] = []
            if new and tracked:
                _bind_files(con, [folder / n for n in new])
                span = {"day": day, "start": tracked[0], "end": tracked[-1] + HOUR, "hours": tracked}
                rows, hist = self._fresh(con, span)
                folded = sorted({h.as_py() for h in rows.column("hour").unique()})
                if folded:
                    parts.append(_added(con, (ROLLUPS_HOURLY, LATENCY_HOURLY), rows, hist, day, folded))
                    changed += folded
            if full:
                _bind_files(con, [folder / n for n in sorted(listed)])
                span = {"day": day, "start": full[0], "end": full[-1] + HOUR, "hours": full}
                parts.append(self._fresh(con, span))
                changed += full
            if not changed:
                return {}
            rows = _combine(con, [p[0] for p in parts], "rollup_keep", day, changed, ROLLUP_SCHEMA)
            hist = _combine(con, [p[1] for p in parts], "latency_keep", day, changed, HIST_SCHEMA)
            if rows.num_rows == 0 and not self.infra.lake.has_day(ROLLUPS_HOURLY, day):
                return {}
            self.infra.lake.publish_file(hist, LATENCY_HOURLY.file(day))
            self.infra.lake.publish_file(rows, ROLLUPS_HOURLY.file(day))
            version = self._bump(sorted(changed))
            return {h.isoformat(): version for h in changed}
        finally:
            con.close()

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

    def _bump(self, hours: list[dt.datetime]) -> int:
        version = time.time_ns()
        with self.infra.store.connect() as con:
            con.executemany(
                "INSERT INTO rollup_hour_versions (hour, version) VALUES (?, ?)"
                " ON CONFLICT (hour) DO UPDATE SET version = excluded.version",
                [(h.isoformat(), version) for h in hours],
            )
        return version

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
        return _added(con, (ROLLUPS_BASE, LATENCY_BASE), rows, hist, span["day"], span["hours"])

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



def _added(con: duckdb.DuckDBPyConnection, stored: tuple[LakeTable, LakeTable], rows: pa.Table, hist: pa.Table,
           day: dt.date, hours: list[dt.datetime]) -> tuple[pa.Table, pa.Table]:
    """The rollup and histogram rows `stored` (the rollups and latency tables to add to) holds for `hours` of
    `day`, with `rows` and `hist` added (rollup_add.sql, latency_add.sql)."""
    con.register("rollup_fresh", rows)
    con.register("latency_fresh", hist)
    for alias, table in zip(("rollup_stored", "latency_stored"), stored, strict=True):
        con.execute(f"CREATE OR REPLACE TEMP VIEW {alias} AS SELECT * FROM {table.name}")
    try:
        added = {"day": day, "hours": hours}
        return queries.run(con, "rollup_add", **added), queries.run(con, "latency_add", **added)
    finally:
        con.unregister("rollup_fresh")
        con.unregister("latency_fresh")
        con.execute("DROP VIEW IF EXISTS rollup_stored")
        con.execute("DROP VIEW IF EXISTS latency_stored")

def _bind_files(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> None:
    """Point `con`'s `log_records` view at these files only (a fold reads what it listed, nothing more)."""
    listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    con.execute(f"CREATE OR REPLACE VIEW {LOG_RECORDS.name} AS SELECT * FROM read_parquet([{listed}], "
                f"hive_partitioning = true, hive_types = {{'{LOG_RECORDS.partition}': DATE}})")


def _combine(con: duckdb.DuckDBPyConnection, parts: list[pa.Table], keep_query: str, day: dt.date,
             changed: list[dt.datetime], schema: pa.Schema) -> pa.Table:
    """A day's rows: the stored ones of the unchanged hours and the new rows of the changed ones, by hour."""
    kept = queries.run(con, keep_query, day=day, hours=changed).select(schema.names).cast(schema)
    tables = [kept, *(p.select(schema.names).cast(schema) for p in parts)]
    return pa.concat_tables(tables).sort_by([("hour", "ascending")])
