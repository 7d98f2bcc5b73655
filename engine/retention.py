"""The log cleaner: drop whole raw-log partitions past the retention or over the record cap.

Safety rules: today's partition (and any later one) is never dropped; a day is dropped only once it
is summarized, i.e. its daily stats are written (`Daily.exists`: the stats job writes them atomically
once that day's rollups are complete) and no records arrived after that (`Daily.late_days`); daily
stats are never touched. A partition is dropped by moving its folder out of the table whole (see
`engine.partitions`).

Every drop is recorded (`PartitionDrops`): rollups and daily stats outlive the raw records, so records
that arrive for a dropped day later must be added to what they hold, not recomputed from the few raw
records the day has again (see `engine.stats.rollups`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from engine.infra import Infra
from engine.partitions import PartitionDrops, list_partitions, purge, retire
from engine.schedules import JobOutcome
from engine.stats.daily import Daily
from engine.stats.rollups import Rollups
from engine.tables import LOG_RECORDS

log = logging.getLogger(__name__)


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

    def __init__(self, infra: Infra, daily: Daily, rollups: Rollups, drops: PartitionDrops) -> None:
        self.infra = infra
        self.daily = daily
        self.rollups = rollups
        self.drops = drops
        self.table_dir = LOG_RECORDS.root(infra.data_dir)
        self.retired = infra.data_dir / "_retired" / LOG_RECORDS.folder

    def plan(self, now: dt.datetime) -> CleanPlan:
        """Decide which days go: those before the last `log_retention_days` UTC days (today included),
        then the oldest remaining days until at most `log_max_records` records are left; a day that is
        today or later, or not yet summarized, is kept and says why."""
        settings = self.infra.settings
        today = now.astimezone(dt.UTC).date()
        oldest_kept = today - dt.timedelta(days=settings.log_retention_days - 1)
        objects = self.infra.lake.objects
        listed = objects.partitions(LOG_RECORDS.folder) if objects is not None else list_partitions(self.table_dir)
        parts = [p for p in listed if p.rows or p.files]
        late = set(self.daily.late_days())
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
            elif not self.daily.exists(part.day):
                decisions.append(DayDecision(part.day, part.rows, "keep", "daily stats not written yet"))
            elif part.day in late:
                decisions.append(DayDecision(part.day, part.rows, "keep", "records arrived after its daily stats"))
            else:
                decisions.append(DayDecision(part.day, part.rows, "drop", reason))
                remaining -= part.rows
        return CleanPlan(tuple(decisions), total)

    def dry_run(self, now: dt.datetime) -> JobOutcome:
        """What `run` would drop and keep, changing nothing."""
        return self.plan(now).outcome(done=False)

    def run(self, now: dt.datetime) -> JobOutcome:
        """Drop the planned days and record each drop; each leaves the table whole, under the publish lock."""
        plan = self.plan(now)
        if self.infra.lake.objects is not None:
            return self._run_objects(plan, now)
        for decision in plan.drops:
            folder = LOG_RECORDS.partition_dir(self.infra.data_dir, decision.day)
            # Under the rollups lock too: a rollup refresh recomputing the day either ran before the drop
            # (from all its records) or runs after it and finds the drop recorded.
            with self.rollups.lock(), self.infra.lake.publish_lock():
                if folder.is_dir():
                    retire(folder, self.retired, now)
                    # Its request ids go with it: records re-sent for the day later are added as new (and
                    # counted by the rollups the day keeps; see README "A request_id counts once").
                    self.infra.lake.request_ids.drop(decision.day)
                    self.drops.record(decision.day, now)
            log.info("dropped log partition %s (%d records): %s", decision.day, decision.records, decision.reason)
        purge(self.retired, now, self.infra.settings.lake_grace_seconds)
        return plan.outcome(done=True)

    def _run_objects(self, plan: CleanPlan, now: dt.datetime) -> JobOutcome:
        """On object storage: each day's live files leave the manifest in one transaction (`ObjectLake.drop`);
        the objects are deleted after the grace period."""
        objects = self.infra.lake.objects
        assert objects is not None
        for decision in plan.drops:
            with self.rollups.lock(), self.infra.lake.publish_lock():
                if objects.drop(LOG_RECORDS.folder, decision.day, now):
                    self.infra.lake.request_ids.drop(decision.day)
                    self.drops.record(decision.day, now)
            log.info("dropped log partition %s (%d records): %s", decision.day, decision.records, decision.reason)
        objects.purge(now, self.infra.settings.lake_grace_seconds)
        return plan.outcome(done=True)
