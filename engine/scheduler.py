"""The scheduler: one loop that starts due jobs on worker threads, inside `ezstats serve` or standalone."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from engine.jobs import JobRun, Jobs
from engine.times import Clock

log = logging.getLogger(__name__)


def lower_priority(nice: int) -> None:
    """Lower the OS priority of the calling thread by `nice` (Linux: nice is per thread; elsewhere a no-op).

    A job thread runs next to the request handlers of `ezstats serve`; when both want the cores, a stats
    request or an ingest batch should not wait behind a rollup or a compaction. Threads the job starts
    (DuckDB's, pyarrow's) inherit the priority when they are created from it.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:  # a sandbox may refuse it; the jobs still run, at the usual priority
        log.warning("could not lower the priority of job thread: %s", exc)


class Scheduler:
    """Runs each job on its schedule, UTC, on a small thread pool.

    A tick is run once across every scheduler on the same data and a job never overlaps itself (see
    `engine.jobs`); a tick missed while no scheduler ran is run once, late, not once per missed tick.
    A job that raises is recorded as failed and the scheduler carries on. `stop()` waits for running jobs.
    """

    def __init__(self, jobs: Jobs, clock: Clock, workers: int = 4, poll_seconds: float = 1.0) -> None:
        self.jobs = jobs
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ezstats-job",
                                        initializer=lower_priority, initargs=(jobs.infra.settings.job_nice,))
        self._running: dict[str, Future[JobRun | None]] = {}
        self._handled: dict[str, dt.datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune: dt.datetime | None = None

    def tick(self, now: dt.datetime) -> list[Future[JobRun | None]]:
        """Start every job whose latest tick at or before `now` has not run and that is not running here."""
        started = []
        self._forget_finished()
        for spec in self.jobs.specs().values():
            due = spec.schedule.previous(now)
            if spec.name in self._running or self._handled.get(spec.name) == due:
                continue
            if self.jobs.is_claimed(spec.name, due):
                self._handled[spec.name] = due  # another scheduler ran it; no need to ask again
                continue
            future = self._pool.submit(self.jobs.execute, spec, "schedule", due)
            self._running[spec.name] = future
            future.add_done_callback(functools.partial(self._done, spec.name, due))
            started.append(future)
        self._prune(now)
        return started

    def start(self) -> None:
        """Run the loop on a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run_forever, name="ezstats-scheduler", daemon=True)
            self._thread.start()
            log.info("scheduler started with jobs: %s", ", ".join(sorted(self.jobs.specs())))

    def run_forever(self) -> None:
        """Tick until `stop()`; a failure of the loop itself is logged and retried on the next poll."""
        while not self._stop.is_set():
            try:
                self.tick(self.clock())
            except Exception:
                log.exception("scheduler tick failed; retrying")
            # A random phase: replicas polling in lockstep would leave every tick to the one that started first.
            self._stop.wait(self.poll_seconds * random.uniform(0.5, 1.0))

    def stop(self, wait: bool = True) -> None:
        """Stop starting jobs; with `wait`, return once the running ones have finished."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._pool.shutdown(wait=wait)
        log.info("scheduler stopped")

    def _done(self, name: str, due: dt.datetime, future: Future[JobRun | None]) -> None:
        if future.exception() is not None:  # the job's own errors are recorded; this is the recording failing
            log.error("job %s could not run: %s", name, future.exception())
            return
        # Run, or skipped because another process held the job's lock: either way the tick is handled
        # here only once it is claimed in the store, which `tick` asks again next time otherwise.
        if future.result() is not None:
            self._handled[name] = due

    def _forget_finished(self) -> None:
        for name in [n for n, f in self._running.items() if f.done()]:
            del self._running[name]

    def _prune(self, now: dt.datetime) -> None:
        if self._last_prune is None or now - self._last_prune > dt.timedelta(hours=1):
            self._last_prune = now
            pruned = self.jobs.prune(now)
            if pruned:
                log.info("pruned %d old job run records", pruned)
