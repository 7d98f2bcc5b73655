"""The log cleaner: drop whole raw-log partitions past the retention or over the record cap.

Safety rules: today's partition (and any later one) is never dropped; a day is dropped only once it
is summarized, i.e. `<data>/daily_stats/date=D/` holds a Parquet file (the stats job writes it
atomically once that day's rollups and daily stats are complete) and no records arrived after that
(the stats job's `daily_stats_late`); daily stats are never touched.
A partition is dropped by moving its folder out of the table whole (see `engine.partitions`).

Every drop is recorded (`log_partition_drops`, read through `dropped_days`): rollups and daily stats
outlive the raw records, so records that arrive for a dropped day later must be added to what they
hold, not recomputed from the few raw records the day has again (see `engine.stats.rollups`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.partitions import list_partitions, partition_path, purge, retire
from engine.schedules import JobOutcome
from engine.store import ControlStore

if TYPE_CHECKING:
    from engine.facade import Engine

log = logging.getLogger(__name__)

#: The table whose partitions mark a day as summarized (written by the stats job).
SUMMARY_TABLE = "daily_stats"
#: The stats job's list of summarized days that later received records (ISO `date` column).
LATE_TABLE = "daily_stats_late"

DROPS_DDL = """
CREATE TABLE IF NOT EXISTS log_partition_drops (
    date       TEXT PRIMARY KEY,  -- a UTC day whose raw log partition the cleaner dropped
    drops      INTEGER NOT NULL,  -- how many times: late records start a new partition that is dropped in turn
    dropped_at TEXT NOT NULL      -- the latest drop
)
"""


def dropped_days(store: ControlStore) -> dict[dt.date, int]:
    """The days whose raw log partition the cleaner dropped, each with how many times it did.

    The raw records of such a day are only those that arrived after its latest drop; the count tells a
    reader whether the day was dropped again since it last looked.
    """
    store.ensure(DROPS_DDL)
    with store.connect(write=False) as con:
        rows = con.execute("SELECT date, drops FROM log_partition_drops").fetchall()
    return {dt.date.fromisoformat(r["date"]): r["drops"] for r in rows}


@dataclass(frozen=True)
class DayDecision:
    """What the cleaner does with one day: `drop`, or `keep` with the reason it may not drop it."""

    day: dt.date
    records: int
    action: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return {"day": self.day.isoformat(), "records": self.records, "action": self.action, "reason": self.reason}


@dataclass(frozen=True)
class CleanPlan:
    """The cleaner's decisions for the days it would drop or had to keep, and the record totals."""

    decisions: tuple[DayDecision, ...]
    records_before: int

    @property
    def drops(self) -> list[DayDecision]:
        """The days to drop."""
        return [d for d in self.decisions if d.action == "drop"]

    @property
    def records_after(self) -> int:
        """Records left once the drops are done."""
        return self.records_before - sum(d.records for d in self.drops)

    def outcome(self, done: bool) -> JobOutcome:
        """The run record: what was (or would be) dropped and what was kept and why."""
        drops, kept = self.drops, [d for d in self.decisions if d.action == "keep"]
        verb = "dropped" if done else "would drop"
        message = f"{verb} {len(drops)} day(s), {sum(d.records for d in drops):,} records"
        if kept:
            message += "; kept " + ", ".join(f"{d.day} ({d.reason})" for d in kept)
        return JobOutcome(rows=sum(d.records for d in drops), message=message, details={
            "dry_run": not done, "records_before": self.records_before, "records_after": self.records_after,
            "days": [d.to_dict() for d in self.decisions]})


class LogCleaner:
    """Applies EZ_LOG_RETENTION_DAYS, then EZ_LOG_MAX_RECORDS, to `log_records` partitions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table_dir = engine.settings.log_records_dir
        self.retired = engine.settings.data_dir / "_retired" / self.table_dir.name
        engine.store.ensure(DROPS_DDL)

    def plan(self, now: dt.datetime) -> CleanPlan:
        """Decide which days go: those before the last `log_retention_days` UTC days (today included),
        then the oldest remaining days until at most `log_max_records` records are left; a day that is
        today or later, or not yet summarized, is kept and says why."""
        settings = self.engine.settings
        today = now.astimezone(dt.UTC).date()
        oldest_kept = today - dt.timedelta(days=settings.log_retention_days - 1)
        parts = [p for p in list_partitions(self.table_dir) if p.rows or p.files]
        late = self.late_days()
        remaining = sum(p.rows for p in parts)
        total = remaining
        decisions = []
        for part in parts:  # oldest first
            if part.day < oldest_kept:
                reason = f"older than {settings.log_retention_days} days"
            elif remaining > settings.log_max_records:
                reason = f"over {settings.log_max_records:,} records"
            else:
                continue
            if part.day >= today:
                decisions.append(DayDecision(part.day, part.rows, "keep", "today is never dropped"))
            elif not self.summarized(part.day):
                decisions.append(DayDecision(part.day, part.rows, "keep", "daily stats not written yet"))
            elif part.day in late:
                decisions.append(DayDecision(part.day, part.rows, "keep", "records arrived after its daily stats"))
            else:
                decisions.append(DayDecision(part.day, part.rows, "drop", reason))
                remaining -= part.rows
        return CleanPlan(tuple(decisions), total)

    def summarized(self, day: dt.date) -> bool:
        """Whether the stats job has written `day`'s daily stats (so its raw records may go)."""
        folder = partition_path(self.engine.settings.data_dir / SUMMARY_TABLE, day)
        return folder.is_dir() and any(folder.glob("*.parquet"))

    def late_days(self) -> set[dt.date]:
        """Summarized days that received records after their daily stats were written (the stats job's
        `daily_stats_late` table, when it exists): their raw records are not all summarized yet."""
        with self.engine.store.connect(write=False) as con:
            if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (LATE_TABLE,)).fetchone() is None:
                return set()
            return {dt.date.fromisoformat(r[0]) for r in con.execute(f"SELECT date FROM {LATE_TABLE}")}

    def dry_run(self, now: dt.datetime) -> JobOutcome:
        """What `run` would drop and keep, changing nothing."""
        return self.plan(now).outcome(done=False)

    def run(self, now: dt.datetime) -> JobOutcome:
        """Drop the planned days and record each drop; each leaves the table whole, under the publish lock."""
        plan = self.plan(now)
        for decision in plan.drops:
            folder = partition_path(self.table_dir, decision.day)
            # Under the rollups lock too: a rollup refresh recomputing the day either ran before the drop
            # (from all its records) or runs after it and finds the drop recorded.
            with self.engine.stats.rollups.lock(), self.engine.lake.publish_lock():
                if folder.is_dir():
                    retire(folder, self.retired, now)
                    self._record_drop(decision.day, now)
            log.info("dropped log partition %s (%d records): %s", decision.day, decision.records, decision.reason)
        purge(self.retired, now, self.engine.settings.lake_grace_seconds)
        return plan.outcome(done=True)

    def _record_drop(self, day: dt.date, now: dt.datetime) -> None:
        with self.engine.store.connect() as con:
            con.execute(
                "INSERT INTO log_partition_drops (date, drops, dropped_at) VALUES (?, 1, ?)"
                " ON CONFLICT (date) DO UPDATE SET drops = drops + 1, dropped_at = excluded.dropped_at",
                (day.isoformat(), now.isoformat()),
            )
