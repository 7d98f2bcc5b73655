"""Job runs: claiming a tick once across processes, never overlapping a job, recording every run.

Two mechanisms, each doing one thing:

- an flock per job (`<data>/_locks/job-<name>.lock`) is held for the whole run, so a job never runs
  twice at once, whichever process or thread starts it; the kernel drops it when a process dies, so a
  crash never leaves a stale lock (a `running` record found while holding the lock is marked `abandoned`);
- `job_ticks` remembers the last scheduled tick each job ran for, checked and advanced in the same
  transaction that records the run, so each tick runs once even with several schedulers on the data.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import Conflict, InvalidParameter, NotFound
from engine.schedules import JobOutcome, JobSpec, Schedule

if TYPE_CHECKING:
    import sqlite3

    from engine.facade import Engine

log = logging.getLogger(__name__)

JOBS_DDL = """
CREATE TABLE IF NOT EXISTS job_runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT NOT NULL,
    trigger     TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    due_at      TEXT,             -- the scheduled tick (ISO UTC), NULL for a manual run
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'failed', 'abandoned')),
    rows        INTEGER,
    message     TEXT,
    details     TEXT,             -- JSON
    error       TEXT,
    duration_ms REAL,
    owner       TEXT NOT NULL     -- host:pid:thread that ran it
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job, run_id);
CREATE TABLE IF NOT EXISTS job_ticks (
    job      TEXT PRIMARY KEY,
    last_due TEXT NOT NULL       -- ISO UTC of the last scheduled tick claimed
)
"""


class JobBusy(Conflict):
    """The job is running right now (in this or another process)."""


@dataclass(frozen=True)
class JobRun:
    """One recorded run of a job."""

    run_id: int
    job: str
    trigger: str
    due_at: dt.datetime | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str
    rows: int | None
    message: str | None
    details: dict[str, Any]
    error: str | None
    duration_ms: float | None
    owner: str


@dataclass(frozen=True)
class JobStatus:
    """A job as `GET /admin/jobs` shows it: its schedule, last run and next run."""

    name: str
    description: str
    schedule: str
    last_run: JobRun | None
    next_run_at: dt.datetime


def iso(t: dt.datetime) -> str:
    """The stored form of a time: ISO 8601 in UTC with microseconds, so strings compare like times."""
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds")


class Jobs:
    """The engine's jobs (`engine.jobs`): list them, run one now, run what is due, read their runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.locks = engine.settings.data_dir / "_locks"
        self.locks.mkdir(exist_ok=True)
        engine.store.ensure(JOBS_DDL)

    def specs(self) -> dict[str, JobSpec]:
        """The engine's jobs by name (`Engine.job_specs()`)."""
        return {spec.name: spec for spec in self.engine.job_specs()}

    def spec(self, name: str) -> JobSpec:
        """One job by name (`-` and `_` are interchangeable).

        Raises:
            NotFound: no such job.
        """
        specs = self.specs()
        spec = specs.get(name) or specs.get(name.replace("-", "_"))
        if spec is None:
            raise NotFound(f"no job named {name!r}; jobs: {', '.join(sorted(specs))}")
        return spec

    def run(self, name: str, dry_run: bool = False) -> JobRun | JobOutcome:
        """Run one job now and wait for it; a dry run only reports what the job would do and is not recorded.

        Raises:
            NotFound: no such job.
            InvalidParameter: a dry run of a job that has none.
            JobBusy: the job is running right now.
        """
        spec = self.spec(name)
        if dry_run:
            if spec.dry_run is None:
                raise InvalidParameter(f"job {spec.name!r} has no dry-run mode")
            return spec.dry_run(self.engine.clock())
        run = self.execute(spec, "manual", None)
        if run is None:
            raise JobBusy(f"job {spec.name!r} is running right now; try again when it finishes")
        return run

    def run_due(self, now: dt.datetime) -> list[JobRun]:
        """Run, one after another, every job whose latest tick at or before `now` has not run yet."""
        runs = []
        for spec in self.specs().values():
            run = self.execute(spec, "schedule", spec.schedule.previous(now))
            if run is not None:
                runs.append(run)
        return runs

    def execute(self, spec: JobSpec, trigger: str, due: dt.datetime | None) -> JobRun | None:
        """Run `spec` once if its lock is free and (for a scheduled tick) the tick is unclaimed.

        An exception in the job is logged and recorded as a failed run, never raised.
        Returns the finished run, or None when it was not this caller's to run.
        """
        with self._lock(spec.name) as locked:
            if not locked:
                return None
            started = self.engine.clock()
            run_id = self._claim(spec.name, trigger, due, started)
            if run_id is None:
                return None
            clock = time.monotonic()
            try:
                outcome, error = JobOutcome.of(spec.run(started)), None
            except Exception as exc:
                log.exception("job %s failed", spec.name)
                outcome, error = JobOutcome(), f"{type(exc).__name__}: {exc}"
            return self._finish(run_id, outcome, error, (time.monotonic() - clock) * 1000)

    def is_claimed(self, name: str, due: dt.datetime) -> bool:
        """Whether the tick `due` of job `name` has been run (or is running) already."""
        with self.engine.store.connect(write=False) as con:
            return _last_due(con, name) >= iso(due)

    def status(self, now: dt.datetime) -> list[JobStatus]:
        """Every job with its last run and when it runs next (an unclaimed past tick means: now)."""
        with self.engine.store.connect(write=False) as con:
            last = {row["job"]: self._row(row) for row in con.execute(
                "SELECT * FROM job_runs WHERE run_id IN (SELECT max(run_id) FROM job_runs GROUP BY job)")}
            ticks = {row["job"]: row["last_due"] for row in con.execute("SELECT * FROM job_ticks")}
        out = []
        for spec in self.specs().values():
            due = spec.schedule.previous(now)
            upcoming = due if ticks.get(spec.name, "") < iso(due) else spec.schedule.next(now)
            out.append(JobStatus(spec.name, spec.description, spec.schedule.text, last.get(spec.name), upcoming))
        return out

    def runs(self, name: str | None = None, limit: int = 50) -> list[JobRun]:
        """The latest runs, newest first, of one job or of all."""
        if name is not None:
            name = self.spec(name).name
        with self.engine.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT * FROM job_runs WHERE ? IS NULL OR job = ? ORDER BY run_id DESC LIMIT ?", (name, name, limit)
            ).fetchall()
        return [self._row(row) for row in rows]

    def get_run(self, run_id: int) -> JobRun:
        """One run by id.

        Raises:
            NotFound: no such run.
        """
        with self.engine.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM job_runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job run {run_id}")
        return self._row(row)

    def prune(self, before: dt.datetime) -> int:
        """Delete finished run records started before `before`; returns how many."""
        with self.engine.store.connect() as con:
            return con.execute("DELETE FROM job_runs WHERE started_at < ? AND outcome <> 'running'",
                               (iso(before),)).rowcount

    def _claim(self, name: str, trigger: str, due: dt.datetime | None, started: dt.datetime) -> int | None:
        with self.engine.store.connect() as con:
            if due is not None:
                if _last_due(con, name) >= iso(due):
                    return None
                con.execute("INSERT INTO job_ticks (job, last_due) VALUES (?, ?) "
                            "ON CONFLICT (job) DO UPDATE SET last_due = excluded.last_due", (name, iso(due)))
            # We hold the job's lock, so a run still marked running belongs to a process that died.
            con.execute("UPDATE job_runs SET outcome = 'abandoned', finished_at = ?, "
                        "error = 'the process running it stopped before it finished' "
                        "WHERE job = ? AND outcome = 'running'", (iso(started), name))
            cursor = con.execute(
                "INSERT INTO job_runs (job, trigger, due_at, started_at, outcome, owner) "
                "VALUES (?, ?, ?, ?, 'running', ?)",
                (name, trigger, iso(due) if due else None, iso(started), _owner()),
            )
            return cursor.lastrowid

    def _finish(self, run_id: int, outcome: JobOutcome, error: str | None, duration_ms: float) -> JobRun:
        with self.engine.store.connect() as con:
            row = con.execute(
                "UPDATE job_runs SET finished_at = ?, outcome = ?, rows = ?, message = ?, details = ?, error = ?, "
                "duration_ms = ? WHERE run_id = ? RETURNING *",
                (iso(self.engine.clock()), "failed" if error else "ok", outcome.rows, outcome.message,
                 json.dumps(dict(outcome.details), default=str), error, duration_ms, run_id),
            ).fetchone()
        return self._row(row)

    @contextmanager
    def _lock(self, name: str) -> Iterator[bool]:
        fd = os.open(self.locks / f"job-{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @staticmethod
    def _row(row: sqlite3.Row) -> JobRun:
        def when(text: str | None) -> dt.datetime | None:
            return dt.datetime.fromisoformat(text) if text else None

        return JobRun(
            run_id=row["run_id"], job=row["job"], trigger=row["trigger"], due_at=when(row["due_at"]),
            started_at=dt.datetime.fromisoformat(row["started_at"]), finished_at=when(row["finished_at"]),
            outcome=row["outcome"], rows=row["rows"], message=row["message"],
            details=json.loads(row["details"]) if row["details"] else {}, error=row["error"],
            duration_ms=row["duration_ms"], owner=row["owner"],
        )


def _last_due(con: sqlite3.Connection, name: str) -> str:
    row = con.execute("SELECT last_due FROM job_ticks WHERE job = ?", (name,)).fetchone()
    return row["last_due"] if row else ""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def standard_specs(engine: Engine) -> list[JobSpec]:
    """The jobs of a full ezstats: stats, alerts, retention, compaction, quota resets.

    Stats and alerts jobs appear when their domain objects exist on the engine.
    """
    s = engine.settings
    specs: list[JobSpec] = []
    stats = getattr(engine, "stats", None)
    if stats is not None:
        specs.append(JobSpec("rollups", Schedule.parse(s.schedule_rollups), stats.refresh_rollups,
                             "Refresh the hourly rollups of hours that received records."))
        specs.append(JobSpec("daily_stats", Schedule.parse(s.schedule_daily_stats), stats.run_daily,
                             "Write the daily stats of finished days."))
    alerts = getattr(engine, "alerts", None)
    if alerts is not None:
        specs.append(JobSpec("alert_detector", Schedule.parse(s.schedule_alert_detector), alerts.run_once,
                             "Check the alert rules and raise alerts."))
    from engine.compaction import Compactor
    from engine.retention import LogCleaner

    cleaner = LogCleaner(engine)
    specs.append(JobSpec("log_cleaner", Schedule.parse(s.schedule_log_cleaner), cleaner.run,
                         "Drop raw log partitions past EZ_LOG_RETENTION_DAYS or over EZ_LOG_MAX_RECORDS.",
                         dry_run=cleaner.dry_run))
    compactor = Compactor(engine)
    specs.append(JobSpec("compaction", Schedule.parse(s.schedule_compaction), compactor.run,
                         "Merge the small files of each log partition.", dry_run=compactor.dry_run))
    specs.append(JobSpec("quota_reset", Schedule.parse(s.schedule_quota_reset), engine.quotas.reset_due,
                         "Start the new quota period of keys whose period ended."))
    return specs
