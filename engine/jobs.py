"""Job runs: claiming a tick once across processes, never overlapping a job, recording every run.

Two mechanisms, each doing one thing:

- an flock per job (`<data>/_locks/job-<name>.lock`) is held for the whole run, so a job never runs
  twice at once, whichever process or thread starts it; the kernel drops it when a process dies, so a
  crash never leaves a stale lock (a `running` record found while holding the lock is marked `abandoned`).
  With the control store on PostgreSQL (replicas on several hosts) a lease `job:<name>` in it does the
  same, expiring EZ_LEASE_SECONDS after its holder stops renewing it (`engine.leases`);
- `job_ticks` remembers the last scheduled tick each job ran for, checked and advanced in the same
  transaction that records the run, so each tick runs once even with several schedulers on the data.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.alerts import Alerts
from engine.compaction import Compactor
from engine.credentials import Credentials
from engine.errors import Conflict, InvalidParameter, NotFound
from engine.infra import Infra
from engine.notifications import Notifications
from engine.quotas import Quotas
from engine.retention import LogCleaner
from engine.schedules import JobOutcome, JobSpec, Schedule
from engine.stats import Stats
from engine.times import iso

log = logging.getLogger(__name__)

class JobBusy(Conflict):
    """The job is running right now (in this or another process)."""


class JobRun(BaseModel):
    """One recorded run of a job."""

    model_config = ConfigDict(frozen=True)

    run_id: int
    job: str
    trigger: Literal["schedule", "manual"]
    due_at: dt.datetime | None = Field(description="The scheduled tick it ran for (null when run by hand).")
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: Literal["running", "ok", "failed", "abandoned"] = Field(
        description="`running`, `ok`, `failed` or `abandoned` (its process stopped before it finished).")
    rows: int | None = Field(description="Rows the run touched.")
    message: str | None
    details: dict[str, Any]
    error: str | None
    duration_ms: float | None
    owner: str = Field(description="host:pid:thread that ran it.")


class Job(BaseModel):
    """A scheduled job: when it runs, how it last went, when it runs next."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    schedule: str = Field(description="Seconds between runs, or a UTC cron expression.")
    last_run: JobRun | None
    next_run_at: dt.datetime = Field(description="The next tick; a past time means it is due now.")


class Jobs:
    """The engine's jobs (`engine.jobs`): list them, run one now, run what is due, read their runs."""

    def __init__(self, infra: Infra, specs: Sequence[JobSpec]) -> None:
        self.infra = infra
        self._specs = {spec.name: spec for spec in specs}
        self.locks = infra.data_dir / "_locks"
        self.locks.mkdir(exist_ok=True)

    def specs(self) -> dict[str, JobSpec]:
        """The jobs by name, in their order."""
        return dict(self._specs)

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

    def run(self, name: str) -> JobRun:
        """Run one job now and wait for it; the run is recorded like a scheduled one.

        Raises:
            NotFound: no such job.
            JobBusy: the job is running right now.
        """
        spec = self.spec(name)
        run = self.execute(spec, "manual", None)
        if run is None:
            raise JobBusy(f"job {spec.name!r} is running right now; try again when it finishes")
        return run

    def dry_run(self, name: str) -> JobOutcome:
        """What one job would do now, changing nothing and recording nothing.

        Raises:
            NotFound: no such job.
            InvalidParameter: the job has no dry-run mode.
        """
        spec = self.spec(name)
        if spec.dry_run is None:
            raise InvalidParameter(f"job {spec.name!r} has no dry-run mode")
        return spec.dry_run(self.infra.now())

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
        with self.infra.exclusive(f"job:{spec.name}", self.locks / f"job-{spec.name}.lock") as locked:
            if not locked:
                return None
            started = self.infra.now()
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
        with self.infra.store.connect(write=False) as con:
            return _last_due(con, name) >= iso(due)

    def status(self, now: dt.datetime) -> list[Job]:
        """Every job with its last run and when it runs next (an unclaimed past tick means: now)."""
        with self.infra.store.connect(write=False) as con:
            last = {row["job"]: self._row(row) for row in con.execute(
                "SELECT * FROM job_runs WHERE run_id IN (SELECT max(run_id) FROM job_runs GROUP BY job)")}
            ticks = {row["job"]: row["last_due"] for row in con.execute("SELECT * FROM job_ticks")}
        out = []
        for spec in self.specs().values():
            due = spec.schedule.previous(now)
            upcoming = due if ticks.get(spec.name, "") < iso(due) else spec.schedule.next(now)
            out.append(Job(name=spec.name, description=spec.description, schedule=spec.schedule.text,
                           last_run=last.get(spec.name), next_run_at=upcoming))
        return out

    def runs(self, name: str | None = None, limit: int = 50) -> list[JobRun]:
        """The latest runs, newest first, of one job or of all."""
        if name is not None:
            name = self.spec(name).name
        with self.infra.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT * FROM job_runs WHERE ? IS NULL OR job = ? ORDER BY run_id DESC LIMIT ?", (name, name, limit)
            ).fetchall()
        return [self._row(row) for row in rows]

    def get_run(self, run_id: int) -> JobRun:
        """One run by id.

        Raises:
            NotFound: no such run.
        """
        with self.infra.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM job_runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job run {run_id}")
        return self._row(row)

    def prune(self, now: dt.datetime) -> int:
        """Delete finished run records older than `EZ_JOB_RUNS_RETENTION_DAYS` at `now`; returns how many."""
        before = now - dt.timedelta(days=self.infra.settings.job_runs_retention_days)
        with self.infra.store.connect() as con:
            return con.execute("DELETE FROM job_runs WHERE started_at < ? AND outcome <> 'running'",
                               (iso(before),)).rowcount

    def _claim(self, name: str, trigger: str, due: dt.datetime | None, started: dt.datetime) -> int | None:
        with self.infra.store.connect() as con:
            if due is not None:
                if _last_due(con, name) >= iso(due):
                    return None
                con.execute("INSERT INTO job_ticks (job, last_due) VALUES (?, ?) "
                            "ON CONFLICT (job) DO UPDATE SET last_due = excluded.last_due", (name, iso(due)))
            # We hold the job's lock, so a run still marked running belongs to a process that died.
            con.execute("UPDATE job_runs SET outcome = 'abandoned', finished_at = ?, "
                        "error = 'the process running it stopped before it finished' "
                        "WHERE job = ? AND outcome = 'running'", (iso(started), name))
            return int(con.execute(
                "INSERT INTO job_runs (job, trigger, due_at, started_at, outcome, owner) "
                "VALUES (?, ?, ?, ?, 'running', ?) RETURNING run_id",
                (name, trigger, iso(due) if due else None, iso(started), _owner()),
            ).fetchone()["run_id"])

    def _finish(self, run_id: int, outcome: JobOutcome, error: str | None, duration_ms: float) -> JobRun:
        with self.infra.store.connect() as con:
            row = con.execute(
                "UPDATE job_runs SET finished_at = ?, outcome = ?, rows = ?, message = ?, details = ?, error = ?, "
                "duration_ms = ? WHERE run_id = ? RETURNING *",
                (iso(self.infra.now()), "failed" if error else "ok", outcome.rows, outcome.message,
                 json.dumps(dict(outcome.details), default=str), error, duration_ms, run_id),
            ).fetchone()
        return self._row(row)

    @staticmethod
    def _row(row: sqlite3.Row) -> JobRun:
        return JobRun.model_validate({**dict(row), "details": json.loads(row["details"]) if row["details"] else {}})


def _last_due(con: sqlite3.Connection, name: str) -> str:
    row = con.execute("SELECT last_due FROM job_ticks WHERE job = ?", (name,)).fetchone()
    return row["last_due"] if row else ""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def standard_specs(infra: Infra, stats: Stats, alerts: Alerts, cleaner: LogCleaner, compactor: Compactor,
                   quotas: Quotas, credentials: Credentials, notifications: Notifications) -> list[JobSpec]:
    """The jobs of a full ezstats (stats, alerts, notifications, retention, compaction, quota resets, token
    refresh) on their `EZ_SCHEDULE_*` schedules."""
    s = infra.settings
    return [
        JobSpec("rollups", Schedule.parse(s.schedule_rollups), stats.refresh_rollups,
                "Refresh the hourly rollups of hours that received records."),
        JobSpec("daily_stats", Schedule.parse(s.schedule_daily_stats), stats.run_daily,
                "Write the daily stats of finished days."),
        JobSpec("alert_detector", Schedule.parse(s.schedule_alert_detector), alerts.run_once,
                "Check the alert rules and raise alerts."),
        JobSpec("notifier", Schedule.parse(s.schedule_notifier), notifications.run_job,
                "Deliver alert notifications that are due from the outbox (and re-send open alerts to Alertmanager)."),
        JobSpec("log_cleaner", Schedule.parse(s.schedule_log_cleaner), cleaner.run,
                "Drop raw log partitions past EZ_LOG_RETENTION_DAYS or over EZ_LOG_MAX_RECORDS.",
                dry_run=cleaner.dry_run),
        JobSpec("compaction", Schedule.parse(s.schedule_compaction), compactor.run,
                "Merge the small files of each log partition.", dry_run=compactor.dry_run),
        JobSpec("quota_reset", Schedule.parse(s.schedule_quota_reset), quotas.reset_due,
                "Start the new quota period of keys whose period ended."),
        JobSpec("token_refresh", Schedule.parse(s.schedule_token_refresh), credentials.run,
                "Refresh OAuth access tokens before they expire, and the ones the gateway or an admin asked for."),
    ]
