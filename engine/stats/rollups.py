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
(`engine.retention.dropped_days`), the raw records of that day are only those that arrived after the
drop. Its hours are then recomputed as the rows the rollups held at the drop (`rollups_base` and
`latency_base`, taken by the first recompute after it) plus the rows of those later records. That
keeps a recompute idempotent, so a redone batch (a crash before the watermark moved, a batch that
held the watermark back) or late files merged by compaction are still counted exactly once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from engine import catalog, queries
from engine.retention import dropped_days
from engine.schema import PARTITION_COLUMN, TIMESTAMP

if TYPE_CHECKING:
    from engine.facade import Engine

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

ROLLUP_SCHEMA = pa.schema([
    pa.field("hour", TIMESTAMP),
    pa.field("master_id", pa.int64()),
    pa.field("key_id", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("provider_id", pa.int64()),
    pa.field("provider_key_id", pa.int64()),
    pa.field("status_class", pa.string()),
    pa.field("requests", pa.int64()),
    pa.field("successes", pa.int64()),
    pa.field("errors", pa.int64()),
    pa.field("rate_limited", pa.int64()),
    pa.field("provider_failures", pa.int64()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("quota_cost", pa.int64()),
    pa.field("latency_sum", pa.int64()),
    pa.field("latency_max", pa.int32()),
    pa.field("streams", pa.int64()),
    pa.field("ttft_n", pa.int64()),
    pa.field("ttft_sum", pa.int64()),
    pa.field("ttft_max", pa.int32()),
])

#: How rollup measures merge: by sum, or by max. The SQL macros summed_measure and max_measure
#: (definitions.sql) declare the same split for queries; tests/test_stats_sql.py checks they agree.
SUMMED_MEASURES = ("requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
                   "completion_tokens", "total_tokens", "quota_cost", "latency_sum", "streams", "ttft_n", "ttft_sum")
MAX_MEASURES = ("latency_max", "ttft_max")

HIST_SCHEMA = pa.schema([
    pa.field("hour", TIMESTAMP),
    pa.field("dim", pa.string()),
    pa.field("id", pa.string()),
    pa.field("metric", pa.string()),
    pa.field("b", pa.int16()),
    pa.field("n", pa.int64()),
])

ROLLUPS_HOURLY = catalog.LakeTable("rollups_hourly", "rollups_hourly", ROLLUP_SCHEMA)
LATENCY_HOURLY = catalog.LakeTable("latency_hourly", "latency_hourly", HIST_SCHEMA)
ROLLUPS_DAILY = catalog.LakeTable("rollups_daily", "rollups_daily", ROLLUP_SCHEMA)
LATENCY_DAILY = catalog.LakeTable("latency_daily", "latency_daily", HIST_SCHEMA)
catalog.TABLES.extend([ROLLUPS_HOURLY, LATENCY_HOURLY, ROLLUPS_DAILY, LATENCY_DAILY])
# Not in catalog.TABLES: only a recompute reads them (it registers their views), and analysts would take
# them for stats, which they are not once late records arrive.
ROLLUPS_BASE = catalog.LakeTable("rollups_base", "rollups_base", ROLLUP_SCHEMA)
LATENCY_BASE = catalog.LakeTable("latency_base", "latency_base", HIST_SCHEMA)

FILE_NAME = "part.parquet"

STATE_DDL = """
CREATE TABLE IF NOT EXISTS stats_watermarks (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL   -- ingest_batches rowid: every batch at or below it is in the rollups
);
CREATE TABLE IF NOT EXISTS rollup_hour_versions (
    hour    TEXT PRIMARY KEY,  -- ISO UTC hour
    version INTEGER NOT NULL   -- changes whenever the hour's rollup rows are recomputed (cache keys)
);
CREATE TABLE IF NOT EXISTS rollup_bases (
    date  TEXT PRIMARY KEY,  -- a day whose raw partition the log cleaner dropped
    drops INTEGER NOT NULL   -- the drop its rollups_base files were taken after (log_partition_drops.drops)
)
"""

WATERMARK = "rollups_hourly"


@dataclass(frozen=True)
class Pending:
    """What the ledger says is not yet in the rollups."""

    watermark: int          # the ledger rowid the rollups cover
    last: int               # the highest committed rowid seen (the next watermark when all publish)
    hours: frozenset[dt.datetime]  # hours of committed batches past the watermark


def partition_path(table: catalog.LakeTable, day: dt.date) -> Path:
    """The file of a day in one of the rollup tables, relative to the data dir."""
    return Path(table.folder) / f"{PARTITION_COLUMN}={day.isoformat()}" / FILE_NAME


def _days(data_dir: Path, table: catalog.LakeTable) -> list[dt.date]:
    root = data_dir / table.folder
    return sorted(dt.date.fromisoformat(p.parent.name.split("=", 1)[1]) for p in root.glob(f"*/{FILE_NAME}"))


class Rollups:
    """Maintains `rollups_hourly` from the raw records and the ingest ledger."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.store.ensure(STATE_DDL)

    def pending(self) -> Pending:
        """Committed batches the rollups do not hold yet, and the hours they touched."""
        with self.engine.store.connect() as con:
            row = con.execute("SELECT value FROM stats_watermarks WHERE name = ?", (WATERMARK,)).fetchone()
            mark = row["value"] if row else 0
            rows = con.execute(
                "SELECT rowid AS id, state, hours FROM ingest_batches WHERE rowid > ? ORDER BY rowid", (mark,)
            ).fetchall()
        hours: set[dt.datetime] = set()
        last = mark
        blocked = False
        for r in rows:
            if r["state"] != "committed":
                # A batch still publishing (or left by a crashed writer) holds the watermark back, so
                # the batches after it are redone until it commits; recomputing is idempotent.
                blocked = True
                continue
            hours.update(dt.datetime.fromisoformat(h) for h in json.loads(r["hours"]))
            if not blocked:
                last = r["id"]
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
            con = self.engine.connect()
            try:
                for day in sorted(by_day):
                    self.recompute(day, by_day[day], con, closed=day < today)
                for day in sorted(missing - set(by_day)):
                    if day < today:
                        self.build_daily(day)
            finally:
                con.close()
            with self.engine.store.connect() as con_:
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
        first = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        wanted = sorted(hours) if hours is not None else [first + i * HOUR for i in range(24)]
        own = con is None
        con = con or self.engine.connect()
        try:
            span = {"day": day, "start": wanted[0], "end": wanted[-1] + HOUR, "hours": wanted}
            fresh_rows, fresh_hist = self._fresh(con, span)
            rows = self._merge(con, fresh_rows, "rollup_keep", span, hours is not None, ROLLUP_SCHEMA)
            hist = self._merge(con, fresh_hist, "latency_keep", span, hours is not None, HIST_SCHEMA)
            data_dir = self.engine.settings.data_dir
            if rows.num_rows == 0 and not (data_dir / partition_path(ROLLUPS_HOURLY, day)).exists():
                return 0
            # Histograms first: a reader that sees the new counts file also finds matching histograms.
            self.engine.lake.publish_file(hist, partition_path(LATENCY_HOURLY, day))
            self.engine.lake.publish_file(rows, partition_path(ROLLUPS_HOURLY, day))
            self._bump(wanted)
            if closed:
                self.build_daily(day)
            return rows.num_rows
        finally:
            if own:
                con.close()

    def _bump(self, hours: list[dt.datetime]) -> None:
        version = time.time_ns()
        with self.engine.store.connect() as con:
            con.executemany(
                "INSERT INTO rollup_hour_versions (hour, version) VALUES (?, ?)"
                " ON CONFLICT (hour) DO UPDATE SET version = excluded.version",
                [(h.isoformat(), version) for h in hours],
            )

    def versions(self, start: dt.datetime, end: dt.datetime) -> tuple[tuple[str, int], ...]:
        """The versions of the rolled-up hours in [start, end): equal versions, equal rollup rows."""
        with self.engine.store.connect() as con:
            rows = con.execute(
                "SELECT hour, version FROM rollup_hour_versions WHERE hour >= ? AND hour < ? ORDER BY hour",
                (start.isoformat(), end.isoformat()),
            ).fetchall()
        return tuple((r["hour"], r["version"]) for r in rows)

    def build_daily(self, day: dt.date) -> None:
        """Merge a closed day's hourly files into its daily tier files."""
        # A fresh connection: one opened before the hourly files existed has empty views of them.
        con = self.engine.connect()
        try:
            rows = queries.run(con, "rollup_day", day=day).select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
            hist = queries.run(con, "latency_day", day=day).select(HIST_SCHEMA.names).cast(HIST_SCHEMA)
        finally:
            con.close()
        self.engine.lake.publish_file(hist, partition_path(LATENCY_DAILY, day))
        self.engine.lake.publish_file(rows, partition_path(ROLLUPS_DAILY, day))

    def _fresh(self, con: duckdb.DuckDBPyConnection, span: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
        """The recomputed rollup and histogram rows of the span's hours."""
        rows = queries.run(con, "rollup_hours", **span)
        hist = queries.run(con, "latency_hours", **span)
        drops = dropped_days(self.engine.store).get(span["day"])
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
        with self.engine.store.connect(write=False) as state:
            row = state.execute("SELECT drops FROM rollup_bases WHERE date = ?", (day.isoformat(),)).fetchone()
        data_dir = self.engine.settings.data_dir
        if row is None or row["drops"] != drops:
            every_hour: dict[str, Any] = {"day": day, "hours": []}
            rows = queries.run(con, "rollup_keep", **every_hour).select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
            hist = queries.run(con, "latency_keep", **every_hour).select(HIST_SCHEMA.names).cast(HIST_SCHEMA)
            self.engine.lake.publish_file(hist, partition_path(LATENCY_BASE, day))
            self.engine.lake.publish_file(rows, partition_path(ROLLUPS_BASE, day))
            # Recorded only once both files are in place: a crash before this retakes them, from the
            # same hourly rows, since the day's rollups are published after this returns.
            with self.engine.store.connect() as state:
                state.execute(
                    "INSERT INTO rollup_bases (date, drops) VALUES (?, ?)"
                    " ON CONFLICT (date) DO UPDATE SET drops = excluded.drops",
                    (day.isoformat(), drops),
                )
        # A view made before the table had a file reads an empty stand-in: bind them afresh.
        catalog.register(con, ROLLUPS_BASE, data_dir)
        catalog.register(con, LATENCY_BASE, data_dir)

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
        return _days(self.engine.settings.data_dir, ROLLUPS_HOURLY)

    def daily_days(self) -> list[dt.date]:
        """The days that have the daily tier."""
        return _days(self.engine.settings.data_dir, ROLLUPS_DAILY)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One rollup writer at a time across processes (the scheduler's refresh, a backfill)."""
        fd = os.open(self.engine.settings.staging_dir / ".rollups.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
