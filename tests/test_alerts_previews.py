"""Preview runs: queued, run one at a time per process, progress and result read back by id; a run whose
process died reads as abandoned; a finished result is kept; a bounded queue."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from engine.alerts import previews
from engine.alerts.previews import Preview, Previews
from engine.alerts.thresholds import Thresholds
from engine.errors import Conflict, NotFound
from tests.conftest import ON_BOTH

ROOT = Path(__file__).resolve().parents[1]
START = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)


class Gate:
    """A replay that reports progress and waits to be let through, so a test sees runs queue up."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.running = 0
        self.most_at_once = 0
        self.order: list[dt.datetime] = []

    def __call__(self, thresholds, start, end, progress, stop) -> Preview:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.order.append(start)
        total = int((end - start) / dt.timedelta(minutes=1))
        progress(total // 2, total)
        self.entered.release()
        self.release.acquire()
        self.running -= 1
        if stop():
            raise RuntimeError("stopped")
        return Preview.of(start, end, total, thresholds, [])


def wait_for(check, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=lambda: START + dt.timedelta(days=3))


@ON_BOTH  # also on the PostgreSQL control store (runs hold leases there)
def test_runs_queue_and_run_one_at_a_time_oldest_first(engine: Engine) -> None:
    gate = Gate()
    runs = Previews(engine.infra, gate)
    ids = [runs.submit(Thresholds(), START + dt.timedelta(hours=h), START + dt.timedelta(hours=h + 2)).id
           for h in range(3)]
    assert gate.entered.acquire(timeout=30)
    first, second, third = (runs.get(i) for i in ids)
    assert (first.status, first.minutes_done, first.minutes_total, first.progress) == ("running", 60, 120, 0.5)
    assert (second.status, second.queued_ahead, third.status, third.queued_ahead) == ("queued", 1, "queued", 2)
    for _ in ids:
        gate.release.release()
    wait_for(lambda: runs.get(ids[-1]).status == "done")
    assert gate.most_at_once == 1                          # one replay at a time: memory stays bounded
    assert gate.order == [START + dt.timedelta(hours=h) for h in range(3)]
    done = [runs.get(i) for i in ids]
    assert all(r.status == "done" and r.progress == 1.0 and r.result is not None for r in done)
    assert all(a.finished_at is not None and b.started_at is not None and a.finished_at <= b.started_at
               for a, b in itertools.pairwise(done))
    # The results are in the store: another engine on the same data reads them.
    again = Engine(engine.settings, clock=engine.clock)
    assert again.alerts.preview_run(ids[0]).result == done[0].result
    with pytest.raises(NotFound):
        runs.get(10_000)


def test_the_queue_is_bounded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(previews, "MAX_WAITING", 2)
    gate = Gate()
    runs = Previews(engine.infra, gate)
    runs.submit(Thresholds(), START, START + dt.timedelta(hours=1))
    assert gate.entered.acquire(timeout=30)               # running: not waiting
    runs.submit(Thresholds(), START, START + dt.timedelta(hours=1))
    runs.submit(Thresholds(), START, START + dt.timedelta(hours=1))
    with pytest.raises(Conflict, match="2 previews are waiting"):
        runs.submit(Thresholds(), START, START + dt.timedelta(hours=1))
    engine.alerts.previews = runs
    client = TestClient(create_app(engine=engine))
    refused = client.post("/admin/alerts/thresholds/preview", json={"from": "2026-03-09", "to": "2026-03-09"})
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    for _ in range(3):
        gate.release.release()


def test_stopping_the_worker_records_the_run_as_failed(engine: Engine) -> None:
    gate = Gate()
    runs = Previews(engine.infra, gate)
    run = runs.submit(Thresholds(), START, START + dt.timedelta(hours=1))
    assert gate.entered.acquire(timeout=30)
    stopper = threading.Thread(target=runs.close)
    stopper.start()
    wait_for(lambda: runs._stop.is_set())
    gate.release.release()
    stopper.join(30)
    stopped = runs.get(run.id)
    assert stopped.status == "failed" and "stopped" in (stopped.error or "")
    later = runs.submit(Thresholds(), START, START + dt.timedelta(hours=1))   # the worker starts again
    assert gate.entered.acquire(timeout=30)
    gate.release.release()
    wait_for(lambda: runs.get(later.id).status == "done")


CHILD = """
import datetime as dt, sys, time
from pathlib import Path
from engine import Engine, Settings
from engine.alerts.thresholds import Thresholds
engine = Engine(Settings(data_dir=Path(sys.argv[1]), scheduler_enabled=False))
start = dt.datetime.fromisoformat(sys.argv[2])
run = engine.alerts.previews.submit(Thresholds(), start, start + dt.timedelta(days=int(sys.argv[3])))
while engine.alerts.preview_run(run.id).status == "queued":
    time.sleep(0.01)
print(run.id, flush=True)   # this process's worker runs it
while engine.alerts.preview_run(run.id).status in ("queued", "running"):
    time.sleep(0.05)
print(engine.alerts.preview_run(run.id).status, flush=True)
"""


def _child(data: Path, start: dt.datetime, days: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(data), start.isoformat(), str(days)], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)


@pytest.mark.slow
def test_a_run_whose_process_was_killed_reads_as_abandoned_and_a_finished_one_is_kept(tmp_path: Path) -> None:
    from tests.test_alerts_backtest import incidents_traffic

    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=lambda: START + dt.timedelta(days=60))
    engine.ingest_table(incidents_traffic())
    # A year of minutes (the engine's own runs stop at 31 days): long enough to be caught running.
    child = _child(tmp_path, START - dt.timedelta(days=300), 365)
    assert child.stdout is not None
    run_id = int(child.stdout.readline())
    running = engine.alerts.preview_run(run_id)
    assert running.status == "running" and running.result is None
    child.send_signal(signal.SIGKILL)
    child.wait()
    abandoned = engine.alerts.preview_run(run_id)
    assert abandoned.status == "abandoned" and abandoned.result is None and "stopped" in (abandoned.error or "")

    finished = _child(tmp_path, START, 2)
    out, _ = finished.communicate(timeout=120)
    done_id, status = out.split()[-2:]
    assert status == "done"
    # The process that ran it is gone; its result is not.
    kept = engine.alerts.preview_run(int(done_id))
    assert kept.status == "done" and kept.result is not None and kept.result.evaluations == 2 * 1440
    assert kept.result.opened > 0 and kept.result.end == START + dt.timedelta(days=2)
