"""Hourly rollups: the lake table every stats answer for closed time is read from, kept current.

`rollups_hourly/date=YYYY-MM-DD/rollup.parquet` holds one day at the grain hour x master x key x
model x provider x provider key x status class, with exact counts and sums and mergeable latency
histograms. Keeping it current uses the ingest ledger: every committed batch lists the UTC hours it
touched. `refresh` recomputes exactly those hours from raw records (the rest of the day's rows are
kept), publishes the day's file atomically, and only then moves its watermark past the batches, so
an hour is served from rollups only once the rollup holds every batch committed into it. Hours of
batches past the watermark are "dirty": readers take them from raw records instead.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from engine import catalog, queries
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
    pa.field("lat_bucket", pa.list_(pa.int16())),
    pa.field("lat_count", pa.list_(pa.int64())),
    pa.field("ttft_bucket", pa.list_(pa.int16())),
    pa.field("ttft_count", pa.list_(pa.int64())),
])

ROLLUPS_HOURLY = catalog.LakeTable("rollups_hourly", "rollups_hourly", ROLLUP_SCHEMA)
catalog.TABLES.append(ROLLUPS_HOURLY)

FILE_NAME = "rollup.parquet"

STATE_DDL = """
CREATE TABLE IF NOT EXISTS stats_watermarks (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL   -- ingest_batches rowid: every batch at or below it is in the rollups
)
"""

WATERMARK = "rollups_hourly"


@dataclass(frozen=True)
class Pending:
    """What the ledger says is not yet in the rollups."""

    watermark: int          # the ledger rowid the rollups cover
    last: int               # the highest committed rowid seen (the next watermark when all publish)
    hours: frozenset[dt.datetime]  # hours of committed batches past the watermark


def partition_path(day: dt.date) -> Path:
    """The rollup file of a day, relative to the data dir."""
    return Path(ROLLUPS_HOURLY.folder) / f"{PARTITION_COLUMN}={day.isoformat()}" / FILE_NAME


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

        `now` is accepted for the scheduler's uniform signature; which hours to redo comes from the ledger.
        """
        del now
        with self.lock():
            todo = self.pending()
            by_day: dict[dt.date, set[dt.datetime]] = {}
            for hour in todo.hours:
                by_day.setdefault(hour.date(), set()).add(hour)
            if by_day:
                con = self.engine.connect()
                try:
                    for day in sorted(by_day):
                        self.recompute(day, by_day[day], con)
                finally:
                    con.close()
            with self.engine.store.connect() as con:
                con.execute(
                    "INSERT INTO stats_watermarks (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (WATERMARK, todo.last),
                )
        return sorted(by_day)

    def recompute(self, day: dt.date, hours: Iterable[dt.datetime] | None = None,
                  con: duckdb.DuckDBPyConnection | None = None) -> int:
        """Recompute some hours of a day (all 24 when None) from raw records and publish the day's file.

        Returns the number of rollup rows the day has afterwards. The caller holds `lock()`.
        """
        first = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        wanted = sorted(hours) if hours is not None else [first + i * HOUR for i in range(24)]
        own = con is None
        con = con or self.engine.connect()
        try:
            fresh = queries.run(con, "rollup_hours", day=day, start=wanted[0], end=wanted[-1] + HOUR,
                                hours=wanted)
            kept = queries.run(con, "rollup_keep", day=day, hours=wanted) if hours is not None else None
        finally:
            if own:
                con.close()
        parts = [fresh.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)]
        if kept is not None and kept.num_rows:
            parts.append(kept.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA))
        table = pa.concat_tables(parts).sort_by([("hour", "ascending")])
        if table.num_rows == 0 and not (self.engine.settings.data_dir / partition_path(day)).exists():
            return 0
        self.engine.lake.publish_file(table, partition_path(day))
        return table.num_rows

    def days(self) -> list[dt.date]:
        """The days that have a rollup file."""
        root = self.engine.settings.data_dir / ROLLUPS_HOURLY.folder
        return sorted(dt.date.fromisoformat(p.parent.name.split("=", 1)[1]) for p in root.glob(f"*/{FILE_NAME}"))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One rollup writer at a time across processes (the scheduler's refresh, a backfill)."""
        fd = os.open(self.engine.settings.staging_dir / ".rollups.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
