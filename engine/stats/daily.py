"""Daily stats: immutable per-day statistics at the grains a dashboard needs, the long-term history.

`daily_stats/date=YYYY-MM-DD/daily.parquet` is written once a day is closed and its rollups hold every
batch committed into it, and is never rewritten, except by `backfill` (for a day with recorded late
data, or with `--force`). The log cleaner relies on this: a file in `daily_stats/date=D/` means day D
is summarized and its raw records may go. Late data (a batch committed into a summarized day) is
recorded in `daily_stats_late`, so the day is not silently changed and `backfill` knows to fix it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from engine import catalog, queries
from engine.schema import PARTITION_COLUMN
from engine.stats.periods import midnight
from engine.stats.rollups import DAY, Rollups

if TYPE_CHECKING:
    from engine.facade import Engine

GRAINS = ("gateway", "master", "key", "model", "provider", "provider_key")

TOP_MODEL = pa.struct([("model", pa.string()), ("requests", pa.int64()), ("total_tokens", pa.int64())])

DAILY_SCHEMA = pa.schema([
    pa.field("grain", pa.string()),
    pa.field("master_id", pa.int64()),
    pa.field("key_id", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("provider_id", pa.int64()),
    pa.field("provider_key_id", pa.int64()),
    *(pa.field(name, pa.int64()) for name in (
        "requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
        "completion_tokens", "total_tokens", "quota_cost", "masters", "keys", "streams")),
    pa.field("latency_avg", pa.float64()),
    pa.field("latency_p50", pa.float64()),
    pa.field("latency_p95", pa.float64()),
    pa.field("latency_p99", pa.float64()),
    pa.field("latency_max", pa.int32()),
    pa.field("ttft_avg", pa.float64()),
    pa.field("ttft_p95", pa.float64()),
    pa.field("ttft_max", pa.int32()),
    pa.field("top_models", pa.list_(TOP_MODEL)),
])

DAILY_STATS = catalog.LakeTable("daily_stats", "daily_stats", DAILY_SCHEMA)
catalog.TABLES.append(DAILY_STATS)

FILE_NAME = "daily.parquet"
TOP_MODELS = 10

LATE_DDL = """
CREATE TABLE IF NOT EXISTS daily_stats_late (
    date          TEXT PRIMARY KEY,  -- a summarized day that received records after its stats were written
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    refreshes     INTEGER NOT NULL   -- how many rollup refreshes found new records for it
)
"""


def partition_path(day: dt.date) -> Path:
    """The daily stats file of a day, relative to the data dir."""
    return Path(DAILY_STATS.folder) / f"{PARTITION_COLUMN}={day.isoformat()}" / FILE_NAME


class Daily:
    """Computes, stores and reads the daily stats table."""

    def __init__(self, engine: Engine, rollups: Rollups) -> None:
        self.engine = engine
        self.rollups = rollups
        engine.store.ensure(LATE_DDL)

    def exists(self, day: dt.date) -> bool:
        """Whether the day's stats are written (the log cleaner's 'summarized' test)."""
        return (self.engine.settings.data_dir / partition_path(day)).is_file()

    def days(self) -> list[dt.date]:
        """Days whose stats are written."""
        root = self.engine.settings.data_dir / DAILY_STATS.folder
        return sorted(dt.date.fromisoformat(p.parent.name.split("=", 1)[1]) for p in root.glob(f"*/{FILE_NAME}"))

    def compute(self, day: dt.date) -> pa.Table:
        """The day's stats rows from its daily rollups (built first if missing); nothing else is written."""
        if day not in self.rollups.daily_days():
            self.rollups.build_daily(day)
        con = self.engine.connect()
        try:
            table = queries.run(con, "daily_stats", day=day, top=TOP_MODELS)
        finally:
            con.close()
        return table.select(DAILY_SCHEMA.names).cast(DAILY_SCHEMA)

    def write(self, day: dt.date) -> int:
        """Compute and publish a day's stats (replacing any), clear its late mark; returns the row count.

        The caller holds the rollups lock, so no refresh changes the day's rollups meanwhile.
        """
        table = self.compute(day)
        self.engine.lake.publish_file(table, partition_path(day))
        with self.engine.store.connect() as con:
            con.execute("DELETE FROM daily_stats_late WHERE date = ?", (day.isoformat(),))
        return table.num_rows

    def due(self, now: dt.datetime) -> list[dt.date]:
        """Closed days (past the settle delay) that have rollups but no stats yet, oldest first."""
        last_closed = (now - dt.timedelta(seconds=self.engine.settings.daily_stats_delay_seconds)).date() - DAY
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
                self.write(day)
                done.append(day)
        return done

    def note_late(self, days: list[dt.date], now: dt.datetime) -> list[dt.date]:
        """Record which of these just-refreshed days already have stats: their rows are now stale."""
        late = [d for d in days if self.exists(d)]
        stamp = now.isoformat()
        with self.engine.store.connect() as con:
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
        with self.engine.store.connect() as con:
            rows = con.execute("SELECT date FROM daily_stats_late ORDER BY date").fetchall()
        return [dt.date.fromisoformat(r["date"]) for r in rows]

    def read(self, first: dt.date, last: dt.date, grain: str = "gateway", master_id: int | None = None
             ) -> list[dict[str, object]]:
        """Stored rows of [first, last] at one grain (optionally one master's), as dicts."""
        if not DAILY_STATS.has_files(self.engine.settings.data_dir):
            return []
        con = self.engine.connect()
        try:
            table = queries.run(con, "daily_stats_read", first=first, last=last, grain=grain, master_id=master_id)
        finally:
            con.close()
        late = set(self.late_days())
        rows = table.to_pylist()
        for row in rows:
            row["late_data"] = row["date"] in late
        return rows


def closed(day: dt.date, now: dt.datetime) -> bool:
    """Whether a UTC day is over at `now`."""
    return midnight(day + DAY) <= now


