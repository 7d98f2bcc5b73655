"""Checking every lake file, and repairing what no reader can read: `ezstats lake check [--repair]`.

A file is checked whole, row group by row group: its footer, its exact schema (names and types), every
value readable, strings valid UTF-8 (DuckDB refuses a file holding a single invalid string, so one such
file makes every read of its day fail). Then each day's log record count is compared with the ingest
ledger (what the committed batches stored into the day, after the log cleaner's last drop of it, minus
what went to quarantine).

`repair` moves each file that cannot be read to `<data>/_quarantine/` (`engine.quarantine`), rebuilds
the day's request id index without its records (so a gateway may send them again), and recomputes what
was derived from it: the rollups of the hours it held (its batch's hours from the ledger, else the span
its footer gives, else the whole day) and, for a summarized day, its daily stats. A damaged derived
file (rollups, histograms, daily stats) is quarantined and recomputed from the raw records, when they
are still retained. Count mismatches are reported, not repaired: nothing says which records are wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from engine.infra import Infra
from engine.partitions import PartitionDrops
from engine.quarantine import Quarantine, QuarantinedFile
from engine.stats.daily import Daily, closed
from engine.stats.rollups import Rollups
from engine.tables import (
    DAILY_STATS,
    LATENCY_BASE,
    LATENCY_DAILY,
    LATENCY_HOURLY,
    LOG_RECORDS,
    ROLLUPS_BASE,
    ROLLUPS_DAILY,
    ROLLUPS_HOURLY,
    LakeTable,
)
from engine.times import HOUR, midnight

log = logging.getLogger(__name__)

#: Every table checked: the raw records, then what is derived from them.
TABLES: tuple[LakeTable, ...] = (LOG_RECORDS, ROLLUPS_HOURLY, LATENCY_HOURLY, ROLLUPS_DAILY, LATENCY_DAILY,
                                 ROLLUPS_BASE, LATENCY_BASE, DAILY_STATS)


class FileProblem(BaseModel):
    """A lake file that cannot be read as its table's file."""

    table: str
    path: str = Field(description="Relative to the data dir.")
    day: dt.date
    problem: str
    rows: int | None = Field(description="Records its footer says it holds; null: the footer is unreadable.")
    action: str = Field(description="`reported` (check only), `quarantined` (repair), or why repair left it.")


class DayCount(BaseModel):
    """A day whose log records differ from what the ingest ledger says was stored."""

    day: dt.date
    files: int = Field(description="Records in the day's files (from their footers).")
    ledger: int = Field(description="Records the committed batches stored into the day, less quarantined ones.")


class LakeReport(BaseModel):
    """What `lake check` found (and, with repair, did)."""

    files_checked: int
    rows_checked: int
    problems: list[FileProblem]
    mismatches: list[DayCount] = Field(description="Days whose record count differs from the ledger.")
    unchecked_days: list[dt.date] = Field(description="Days the ledger cannot account for (batches written by "
                                          "an older version spanning several days).")
    repaired: bool
    quarantined: list[QuarantinedFile] = Field(description="Files moved to quarantine by this run.")
    recomputed_hours: int = Field(description="Hourly rollups recomputed by this run.")
    ok: bool = Field(description="No unreadable file remains and every checked day matches the ledger.")


class LakeChecker:
    """The lake check and repair (`engine.lakecheck`)."""

    def __init__(self, infra: Infra, rollups: Rollups, daily: Daily, drops: PartitionDrops,
                 quarantine: Quarantine) -> None:
        self.infra = infra
        self.rollups = rollups
        self.daily = daily
        self.drops = drops
        self.quarantine = quarantine

    def check(self, repair: bool = False) -> LakeReport:
        """Check every file of every lake table; with `repair`, quarantine the unreadable ones and recompute
        what they fed (see the module docstring)."""
        data_dir = self.infra.data_dir
        problems: list[FileProblem] = []
        day_rows: dict[dt.date, int] = defaultdict(int)
        files = rows = 0
        for table in TABLES:
            for path in sorted(table.root(data_dir).glob(f"{table.partition}=*/*.parquet")):
                day = _day_of(path)
                if day is None:
                    continue
                found, problem = inspect(path, table.schema)
                files += 1
                rows += found or 0
                if table is LOG_RECORDS:
                    day_rows[day] += found or 0
                if problem is not None:
                    problems.append(FileProblem(table=table.name, path=str(path.relative_to(data_dir)), day=day,
                                                problem=problem, rows=found, action="reported"))
        quarantined: list[QuarantinedFile] = []
        recomputed = 0
        if repair and problems:
            quarantined, recomputed = self._repair(problems)
            for p in problems:  # what the footers of the files now gone counted
                if p.table == LOG_RECORDS.name and p.action == "quarantined":
                    day_rows[p.day] -= p.rows or 0
        expected, unknown = self._ledger_rows()
        mismatches = [DayCount(day=day, files=day_rows.get(day, 0), ledger=expected.get(day, 0))
                      for day in sorted(set(day_rows) | set(expected))
                      if day not in unknown and day_rows.get(day, 0) != expected.get(day, 0)]
        left = [p for p in problems if p.action != "quarantined"]
        return LakeReport(files_checked=files, rows_checked=rows, problems=problems, mismatches=mismatches,
                          unchecked_days=sorted(unknown), repaired=repair, quarantined=quarantined,
                          recomputed_hours=recomputed, ok=not left and not mismatches)

    def _repair(self, problems: list[FileProblem]) -> tuple[list[QuarantinedFile], int]:
        now = self.infra.now()
        lake = self.infra.lake
        moved: list[QuarantinedFile] = []
        recompute: dict[dt.date, set[dt.datetime] | None] = {}  # None: the whole day
        daily_days: set[dt.date] = set()
        for problem in problems:
            path = self.infra.data_dir / problem.path
            table = next(t for t in TABLES if t.name == problem.table)
            with self.rollups.lock(), lake.publish_lock():
                if not path.exists():
                    problem.action = "gone before repair"
                    continue
                hours: list[dt.datetime] = []
                rows = problem.rows
                if table is LOG_RECORDS:
                    hours, counted = self._held(problem.path, path, problem.day)
                    rows = rows if rows is not None else counted
                moved.append(self.quarantine.move(table, path, problem.problem, rows, hours, now))
                problem.action = "quarantined"
                if table is LOG_RECORDS:
                    lake.request_ids.rebuild(problem.day)
            if table is DAILY_STATS:
                daily_days.add(problem.day)
            elif table is LOG_RECORDS:
                wanted = recompute.get(problem.day, set())
                recompute[problem.day] = None if wanted is None else wanted | set(hours)
            else:
                recompute[problem.day] = None
        recomputed = 0
        raw_days = set(LOG_RECORDS.days(self.infra.data_dir))
        dropped = set(self.drops.days())
        with self.rollups.lock():
            for day, some in sorted(recompute.items()):
                if some is not None and not some:
                    continue  # the file held no hour of its day: nothing to recompute
                if some is None and (day not in raw_days or day in dropped):
                    log.warning("rollups of %s cannot be rebuilt: its raw records are no longer retained", day)
                    continue
                hours_wanted = sorted(some) if some is not None else None
                self.rollups.recompute(day, hours_wanted, closed=closed(day, now))
                recomputed += 24 if hours_wanted is None else len(hours_wanted)
                if self.daily.exists(day):
                    daily_days.add(day)
            for day in sorted(daily_days):
                if day in raw_days or day in set(self.rollups.days()):
                    self.daily.write(day)
        return moved, recomputed

    def _held(self, relative: str, path: Path, day: dt.date) -> tuple[list[dt.datetime], int | None]:
        """The hours a log record file held and its record count, as far as anything says: its batch's hours and
        rows (the ledger), else its footer's span, else the whole day."""
        found: set[dt.datetime] = set()
        rows: int | None = 0
        batches = 0
        with self.infra.store.connect(write=False) as con:
            # A group commit's file holds several batches: each names it with its own rows.
            for row in con.execute("SELECT files, hours FROM ingest_batches WHERE files LIKE ?",
                                   (f"%{Path(relative).name}%",)):
                entry = next((e for e in json.loads(row["files"]) if e[1] == relative), None)
                if entry is not None:
                    batches += 1
                    found.update(h for h in map(dt.datetime.fromisoformat, json.loads(row["hours"])) if h.date() == day)
                    rows = rows + int(entry[2]) if rows is not None and len(entry) > 2 else None
        if batches:
            return sorted(found), rows
        span = _footer_span(path)
        if span is not None:
            first, last = span
            hour, hours = first.replace(minute=0, second=0, microsecond=0), []
            while hour <= last:
                hours.append(hour)
                hour += HOUR
            return [h for h in hours if h.date() == day], None
        return [midnight(day) + i * HOUR for i in range(24)], None

    def _ledger_rows(self) -> tuple[dict[dt.date, int], set[dt.date]]:
        """Records per day the committed batches stored (after each day's last drop), less those quarantined;
        and the days the ledger cannot account for."""
        last_drop = self.drops.last_dropped()
        expected: dict[dt.date, int] = defaultdict(int)
        unknown: set[dt.date] = set()
        with self.infra.store.connect(write=False) as con:
            batches = con.execute("SELECT records, files, committed_at FROM ingest_batches"
                                  " WHERE state = 'committed'").fetchall()
        prefix = LOG_RECORDS.folder + "/"
        for batch in batches:
            entries = [e for e in json.loads(batch["files"]) if str(e[1]).startswith(prefix)]
            days = {_day_of(Path(e[1])) for e in entries}
            kept = {d for d in days if d is not None and not (d in last_drop and batch["committed_at"] <= last_drop[d])}
            if all(len(e) >= 3 for e in entries):
                for entry in entries:
                    day = _day_of(Path(entry[1]))
                    if day in kept:
                        expected[day] += int(entry[2])
            elif len(days) == 1 and kept:
                expected[kept.pop()] += batch["records"]
            else:
                unknown |= kept
        for day, lost in self.quarantine.lost_rows(LOG_RECORDS.name).items():
            expected[day] -= lost
        return dict(expected), unknown


def inspect(path: Path, schema: pa.Schema) -> tuple[int | None, str | None]:
    """Read a lake file whole: (rows its footer says, or None; the problem, or None when it reads as `schema`)."""
    try:
        file = pq.ParquetFile(path)
        rows = file.metadata.num_rows
        found = file.schema_arrow
    except Exception as exc:  # any failure to open is the finding itself
        return None, f"unreadable footer: {_first_line(exc)}"
    if [(f.name, f.type) for f in found] != [(f.name, f.type) for f in schema]:
        return rows, f"schema differs from {len(schema)} columns expected: {_first_line(found)}"
    read = 0
    try:
        for i in range(file.num_row_groups):
            group = file.read_row_group(i)
            read += group.num_rows
            for name in group.column_names:
                try:
                    group.column(name).validate(full=True)
                except pa.ArrowInvalid as exc:
                    return rows, f"column {name}: {_first_line(exc)} (not valid UTF-8?)"
    except Exception as exc:  # a damaged page, a truncated column chunk
        return rows, f"unreadable data: {_first_line(exc)}"
    if read != rows:
        return rows, f"holds {read} rows, its footer says {rows}"
    return rows, None


def _footer_span(path: Path) -> tuple[dt.datetime, dt.datetime] | None:
    try:
        meta = pq.read_metadata(path)
        column = meta.schema.to_arrow_schema().get_field_index("created_at")
        stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
    except Exception:  # an unreadable footer says nothing
        return None
    if not stats or any(s is None or not s.has_min_max for s in stats):
        return None
    first, last = min(s.min for s in stats), max(s.max for s in stats)
    if not isinstance(first, dt.datetime) or not isinstance(last, dt.datetime):
        return None
    return _aware(first), _aware(last)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _day_of(path: Path) -> dt.date | None:
    try:
        return dt.date.fromisoformat(path.parent.name.split("=", 1)[1])
    except (IndexError, ValueError):
        return None


def _first_line(value: object) -> str:
    text = str(value).strip().splitlines()
    return text[0][:300] if text else type(value).__name__
