"""Leases in the control store: one holder across hosts, renewed while held, taken over once expired; jobs on
a shared (PostgreSQL) store use them instead of flock."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest

from engine.jobs import JobBusy, Jobs
from engine.leases import Leases
from engine.schedules import JobSpec, Schedule
from tests.conftest import BACKENDS, control_backend
from tests.factories import make_engine

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_one_holder_at_a_time_and_release_frees_it(tmp_path: Path) -> None:
    leases = Leases(make_engine(tmp_path, T0).store, seconds=30)
    assert leases.take("x", "a") and leases.holder("x") == "a"
    assert not leases.take("x", "b")
    assert leases.renew("x", "a") and not leases.renew("x", "b")
    leases.release("x", "b")  # not b's: nothing happens
    assert leases.holder("x") == "a"
    leases.release("x", "a")
    assert leases.holder("x") is None and leases.take("x", "b")


def test_an_expired_lease_is_taken_over_once_and_its_old_holder_cannot_renew(tmp_path: Path) -> None:
    leases = Leases(make_engine(tmp_path, T0).store, seconds=1)
    assert leases.take("x", "dead")  # a holder that then stops renewing (its process died)
    time.sleep(1.1)
    won = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        if leases.take("x", f"r{i}"):
            won.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and leases.holder("x") == f"r{won[0]}"
    assert not leases.renew("x", "dead")


def test_hold_renews_while_the_work_runs(tmp_path: Path) -> None:
    leases = Leases(make_engine(tmp_path, T0).store, seconds=1)
    with leases.hold("x") as held:
        assert held
        time.sleep(1.6)  # past the first expiry: only the renewals keep it
        with leases.hold("x") as again:
            assert not again
    assert leases.holder("x") is None


def _with_jobs(engine, *specs: JobSpec):
    engine.jobs = Jobs(engine.infra, specs)
    return engine


def test_a_job_never_overlaps_itself_across_engines_and_a_dead_holder_is_abandoned(tmp_path: Path) -> None:
    """Two engines on the same data (two replicas): a job running on one is busy on the other. With the
    PostgreSQL store the exclusion is the job's lease (no flock file is taken)."""
    started, release = threading.Event(), threading.Event()

    def slow(now: dt.datetime) -> None:
        started.set()
        release.wait(10)

    one = _with_jobs(make_engine(tmp_path, T0, lease_seconds=1), JobSpec("j", Schedule.parse("60"), slow))
    two = _with_jobs(make_engine(tmp_path, T0, lease_seconds=1), JobSpec("j", Schedule.parse("60"), lambda n: None))
    runner = threading.Thread(target=one.jobs.run, args=("j",))
    runner.start()
    assert started.wait(10)
    time.sleep(1.2)  # past one lease duration: the holder's renewals keep it
    with pytest.raises(JobBusy):
        two.jobs.run("j")
    shared = one.store.shared
    assert (Leases(one.store, 1).holder("job:j") is not None) == shared
    release.set()
    runner.join()
    assert two.jobs.run("j").outcome == "ok"
    if shared:
        # A replica that died mid-run: its lease runs out, the next taker marks the run abandoned.
        leases = Leases(one.store, seconds=1)
        assert leases.take("job:j", "gone:1:x:0")
        with one.store.connect() as con:
            con.execute("INSERT INTO job_runs (job, trigger, started_at, outcome, owner) "
                        "VALUES ('j', 'manual', '2026-03-01T12:00:00.000000+00:00', 'running', 'gone:1:x')")
        with pytest.raises(JobBusy):
            two.jobs.run("j")
        time.sleep(1.1)
        assert two.jobs.run("j").outcome == "ok"
        assert [r.outcome for r in two.jobs.runs("j")][:2] == ["ok", "abandoned"]


@pytest.mark.postgres
@pytest.mark.parametrize("control", ["postgresql"], indirect=True)
def test_a_preview_run_whose_replica_died_reads_as_abandoned_once_its_lease_expires(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, T0, lease_seconds=1)
    with engine.store.connect() as con:  # a run another replica claimed: its lease is held, it is running
        run_id = con.execute(
            "INSERT INTO preview_runs (status, span_start, span_end, thresholds, minutes_total, requested_at,"
            " started_at, owner) VALUES ('running', ?, ?, '{}', 60, ?, ?, 'other:1:x') RETURNING id",
            ("2026-03-01T00:00:00+00:00", "2026-03-01T01:00:00+00:00", "2026-03-01T12:00:00+00:00",
             "2026-03-01T12:00:00+00:00")).fetchone()["id"]
    assert Leases(engine.store, seconds=1).take(f"preview:{run_id}", "other:1:x:0")
    assert engine.alerts.preview_run(run_id).status == "running"
    time.sleep(1.1)  # the replica died: nobody renews its lease
    assert engine.alerts.preview_run(run_id).status == "abandoned"
