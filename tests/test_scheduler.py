"""The scheduler: ticks on time with an injected clock, once across processes, failures recorded."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine import Engine, Settings
from engine.errors import InvalidParameter
from engine.jobs import JobBusy, Jobs, standard_specs
from engine.scheduler import Scheduler
from engine.schedules import JobOutcome, JobSpec, Schedule
from tests.conftest import BACKENDS, SQLITE_ONLY, control_backend
from tests.factories import make_engine

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

T0 = dt.datetime(2026, 3, 2, 0, 0, 30, tzinfo=dt.UTC)  # a Monday


def test_schedule_parse_and_ticks() -> None:
    every = Schedule.parse("60")
    assert every.previous(T0) == dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
    assert every.next(T0) == dt.datetime(2026, 3, 2, 0, 1, tzinfo=dt.UTC)
    cron = Schedule.parse("5 0 * * *")
    assert cron.previous(T0) == dt.datetime(2026, 3, 1, 0, 5, tzinfo=dt.UTC)
    at = dt.datetime(2026, 3, 2, 0, 5, tzinfo=dt.UTC)
    assert cron.previous(at) == at  # a tick exactly now is due now
    assert cron.next(at) == dt.datetime(2026, 3, 3, 0, 5, tzinfo=dt.UTC)
    assert Schedule.parse("90s").interval == 90
    for bad in ("0", "soon", "61 * * * *", ""):
        with pytest.raises(InvalidParameter):
            Schedule.parse(bad)


def _with_jobs(engine: Engine, *specs: JobSpec) -> Engine:
    engine.jobs = Jobs(engine.infra, specs)
    return engine


def test_jobs_run_on_their_ticks_once(tmp_path: Path) -> None:
    calls: list[tuple[str, dt.datetime]] = []
    engine = _with_jobs(make_engine(tmp_path, T0),
                        JobSpec("minutely", Schedule.parse("60"), lambda now: calls.append(("m", now)) or 3),
                        JobSpec("daily", Schedule.parse("5 0 * * *"), lambda now: calls.append(("d", now))))
    # First start: the latest tick of each job has not run, so both run (a missed tick runs once).
    assert {r.job for r in engine.jobs.run_due(T0)} == {"minutely", "daily"}
    assert engine.jobs.run_due(T0 + dt.timedelta(seconds=20)) == []  # same ticks: nothing
    runs = engine.jobs.run_due(T0 + dt.timedelta(seconds=40))  # 00:01:10: the next minute tick
    assert [r.job for r in runs] == ["minutely"]
    assert runs[0].rows == 3 and runs[0].due_at == dt.datetime(2026, 3, 2, 0, 1, tzinfo=dt.UTC)
    # 00:05:00 exactly: both due; then a long downtime runs each job once, not once per missed tick.
    assert {r.job for r in engine.jobs.run_due(dt.datetime(2026, 3, 2, 0, 5, tzinfo=dt.UTC))} == {"minutely", "daily"}
    later = dt.datetime(2026, 3, 5, 12, 0, tzinfo=dt.UTC)
    assert sorted(r.job for r in engine.jobs.run_due(later)) == ["daily", "minutely"]
    assert len(calls) == 7
    status = {s.name: s for s in engine.jobs.status(later)}
    assert status["daily"].next_run_at == dt.datetime(2026, 3, 6, 0, 5, tzinfo=dt.UTC)
    assert status["minutely"].last_run.outcome == "ok"


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_jobs_run_at_a_lower_os_priority_than_the_server(tmp_path: Path) -> None:
    # A job thread gives way to request handling (EZ_JOB_NICE); the threads that serve requests keep theirs.
    seen: list[int] = []
    engine = _with_jobs(make_engine(tmp_path, T0, job_nice=5),
                        JobSpec("work", Schedule.parse("60"), lambda now: seen.append(_priority())))
    before = _priority()
    scheduler = Scheduler(engine.jobs, lambda: T0)
    try:
        for future in scheduler.tick(T0):
            assert future.result() is not None
    finally:
        scheduler.stop()
    assert seen == [min(before + 5, 19)]
    assert _priority() == before


def test_failing_job_is_recorded_and_the_next_runs(tmp_path: Path) -> None:
    def boom(now: dt.datetime) -> None:
        raise RuntimeError("disk on fire")

    engine = _with_jobs(make_engine(tmp_path, T0), JobSpec("bad", Schedule.parse("60"), boom),
                        JobSpec("good", Schedule.parse("60"), lambda now: JobOutcome(rows=5, message="fine")))
    runs = {r.job: r for r in engine.jobs.run_due(T0)}
    assert runs["bad"].outcome == "failed" and runs["bad"].error == "RuntimeError: disk on fire"
    assert runs["good"].outcome == "ok" and runs["good"].rows == 5 and runs["good"].message == "fine"
    again = engine.jobs.run_due(T0 + dt.timedelta(minutes=1))
    assert {r.job: r.outcome for r in again} == {"bad": "failed", "good": "ok"}
    assert [r.outcome for r in engine.jobs.runs("bad")] == ["failed", "failed"]


def test_background_scheduler_keeps_going_and_stop_waits(tmp_path: Path) -> None:
    finished: list[float] = []

    def slow(now: dt.datetime) -> None:
        time.sleep(0.3)
        finished.append(time.monotonic())

    def boom(now: dt.datetime) -> None:
        raise ValueError("nope")

    clock = {"now": T0}
    engine = _with_jobs(make_engine(tmp_path, T0), JobSpec("slow", Schedule.parse("1"), slow),
                        JobSpec("boom", Schedule.parse("1"), boom))
    scheduler = Scheduler(engine.jobs, lambda: clock["now"], poll_seconds=0.02)
    scheduler.start()
    time.sleep(0.1)
    clock["now"] = T0 + dt.timedelta(seconds=1)  # slow is still running: its next tick waits, no overlap
    time.sleep(0.1)
    scheduler.stop()  # waits for the running job
    stopped = time.monotonic()
    assert finished and finished[-1] <= stopped
    outcomes = [(r.job, r.outcome) for r in engine.jobs.runs()]
    assert ("boom", "failed") in outcomes and outcomes.count(("boom", "failed")) == 2
    assert [r.outcome for r in engine.jobs.runs("slow")] == ["ok"]


def test_manual_run_while_running_is_refused(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, T0)
    inner: list[object] = []

    def reentrant(now: dt.datetime) -> None:
        try:
            engine.jobs.run("nested")
        except JobBusy as exc:
            inner.append(exc)

    _with_jobs(engine, JobSpec("nested", Schedule.parse("60"), reentrant))
    assert engine.jobs.run("nested").outcome == "ok"
    assert len(inner) == 1


def _slow_job(now: dt.datetime, out: Path) -> JobOutcome:
    with out.open("a") as f:
        f.write(f"{now.isoformat()}\n")
    time.sleep(0.5)
    return JobOutcome(rows=1)


def _scheduler_process(data_dir: str, out: str, start: float) -> None:
    engine = Engine(Settings(data_dir=Path(data_dir), scheduler_enabled=False), clock=lambda: T0)
    _with_jobs(engine, JobSpec("once", Schedule.parse("60"), lambda now: _slow_job(now, Path(out))))
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(5):  # keep ticking while the other process runs it, and after
        engine.jobs.run_due(T0)
        time.sleep(0.2)


@pytest.mark.slow
@SQLITE_ONLY  # on PostgreSQL, tests/test_replicas.py runs two serve processes' schedulers
def test_two_scheduler_processes_run_a_tick_once(tmp_path: Path) -> None:
    out = tmp_path / "calls.txt"
    make_engine(tmp_path, T0)  # create the store once
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 2.0
    procs = [ctx.Process(target=_scheduler_process, args=(str(tmp_path), str(out), start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert out.read_text().splitlines() == [T0.isoformat()]
    engine = make_engine(tmp_path, T0)
    runs = engine.jobs.runs()
    assert [(r.job, r.outcome, r.trigger) for r in runs] == [("once", "ok", "schedule")]


def test_abandoned_run_is_marked_when_the_lock_is_next_taken(tmp_path: Path) -> None:
    engine = _with_jobs(make_engine(tmp_path, T0), JobSpec("j", Schedule.parse("60"), lambda now: None))
    assert engine.jobs.runs() == []
    with engine.store.connect() as con:  # what a process killed mid-run leaves behind
        con.execute("INSERT INTO job_runs (job, trigger, started_at, outcome, owner) "
                    "VALUES ('j', 'manual', '2026-03-01T00:00:00.000000+00:00', 'running', 'dead:1:x')")
    engine.jobs.run("j")
    assert [r.outcome for r in engine.jobs.runs("j")] == ["ok", "abandoned"]


def test_standard_jobs_and_their_schedules(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, T0, schedule_compaction="300")
    specs = engine.jobs.specs()
    assert {"log_cleaner", "compaction", "quota_reset"} <= set(specs)
    assert specs["compaction"].schedule.interval == 300
    assert specs["log_cleaner"].schedule.cron == "30 0 * * *"
    with pytest.raises(ValidationError, match="neither seconds"):
        make_engine(tmp_path, T0, schedule_log_cleaner="whenever")


def test_the_standard_jobs_call_their_domains(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, T0)
    calls: list[str] = []

    class Stats:
        def refresh_rollups(self, now: dt.datetime) -> int:
            calls.append("rollups")
            return 7

        def run_daily(self, now: dt.datetime) -> None:
            calls.append("daily")

    class Alerts:
        def run_once(self, now: dt.datetime) -> list[str]:
            calls.append("alerts")
            return ["a"]

    specs = standard_specs(engine.infra, Stats(), Alerts(), engine.cleaner,  # type: ignore[arg-type]
                           engine.compactor, engine.quotas, engine.credentials, engine.notifications)
    engine.jobs = Jobs(engine.infra, specs)
    names = list(engine.jobs.specs())
    assert names[:4] == ["rollups", "daily_stats", "alert_detector", "notifier"]
    runs = {r.job: r for r in engine.jobs.run_due(T0)}
    assert runs["rollups"].rows == 7 and runs["alert_detector"].outcome == "ok"
    assert sorted(calls) == ["alerts", "daily", "rollups"]


def test_old_run_records_are_pruned(tmp_path: Path) -> None:
    clock = {"now": T0}
    engine = _with_jobs(make_engine(tmp_path, T0, job_runs_retention_days=2),
                        JobSpec("j", Schedule.parse("60"), lambda now: None))
    engine.clock = lambda: clock["now"]
    for minutes in (0, 1):
        clock["now"] = T0 + dt.timedelta(minutes=minutes)
        engine.jobs.run_due(clock["now"])
    clock["now"] = T0 + dt.timedelta(days=2, seconds=30)
    scheduler = Scheduler(engine.jobs, engine.clock)
    for future in scheduler.tick(clock["now"]):
        future.result()
    scheduler.stop()
    # The run at T0 is more than 2 days old and goes; the one a minute later and the new one stay.
    assert [r.started_at for r in engine.jobs.runs("j")] == [clock["now"], T0 + dt.timedelta(minutes=1)]
