"""Threshold backtests as jobs: a preview is queued, run on a worker thread, and read back by id.

A month's replay takes tens of seconds, too long for one HTTP request, so `submit` records a run
(`preview_runs`, queued) and answers at once; a worker thread of the process runs the queued runs
one after another, oldest first, updating the minutes done after each replayed day and storing the
result (or the error) in the same row. One replay at a time per process bounds memory (a replay
holds one day of per-minute counts, a few hundred MB at 5M records a day); several processes on one
data dir (the server, a CLI) each run at most one. At most `MAX_WAITING` runs wait at once; more are
refused (Conflict), so a burst of requests cannot pile up work without end.

A run holds an flock (`_locks/preview-<id>.lock`; with a shared control store, the lease `preview:<id>`,
see `engine.leases`) while it runs, so a run found `running` whose lock is free belongs to a process that
died: it is marked `abandoned` when read. A finished result is written in the same transaction as its
`done` status, so it is never lost once reported.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from engine.alerts.history import Alert
from engine.alerts.thresholds import Thresholds
from engine.errors import Conflict, NotFound
from engine.infra import Infra
from engine.times import iso

log = logging.getLogger(__name__)

#: Runs waiting (queued) at most; a submit beyond is refused until one starts.
MAX_WAITING = 16
#: Finished runs kept (with their results); older ones are deleted when a new run is submitted.
KEEP_FINISHED = 100

Status = Literal["queued", "running", "done", "failed", "abandoned"]
#: Replays [start, end) with thresholds; reports (minutes done, minutes in all); asks whether to stop.
Replay = Callable[[Thresholds, dt.datetime, dt.datetime, Callable[[int, int], None], Callable[[], bool]], "Preview"]


class Preview(BaseModel):
    """What candidate thresholds would have opened and resolved over a day range; stored alerts are untouched."""

    start: dt.datetime
    end: dt.datetime
    evaluations: int = Field(description="Minutes replayed.")
    opened: int
    resolved: int
    by_type: dict[str, int]
    by_severity: dict[str, int] = Field(description="By peak severity.")
    thresholds: Thresholds
    alerts: list[Alert]

    @classmethod
    def of(cls, start: dt.datetime, end: dt.datetime, evaluations: int, thresholds: Thresholds,
           alerts: list[Alert]) -> Preview:
        """A preview of replayed alerts, with their counts."""
        by_type: dict[str, int] = {}
        by_severity: dict[str, int] = {}
        for a in alerts:
            by_type[a.type] = by_type.get(a.type, 0) + 1
            by_severity[a.peak_severity] = by_severity.get(a.peak_severity, 0) + 1
        return cls(start=start, end=end, evaluations=evaluations, opened=len(alerts),
                   resolved=sum(a.status == "resolved" for a in alerts), by_type=by_type, by_severity=by_severity,
                   thresholds=thresholds, alerts=alerts)


class PreviewRun(BaseModel):
    """A backtest run: where it is, and its result once done."""

    model_config = ConfigDict(frozen=True)

    id: int
    status: Status = Field(description="`queued`, `running`, `done`, `failed`, or `abandoned` (the process running "
                           "it stopped before it finished).")
    start: dt.datetime = Field(description="First minute replayed.")
    end: dt.datetime = Field(description="End of the replay, excluded (the request time if the range reached it).")
    minutes_done: int
    minutes_total: int
    queued_ahead: int | None = Field(description="Runs that start before this one (queued only).")
    requested_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    result: Preview | None = Field(description="The alerts the thresholds would have raised (status `done`).")

    @computed_field(description="Share of the minutes replayed, 0-1.")  # type: ignore[prop-decorator]
    @property
    def progress(self) -> float:
        return 1.0 if self.status == "done" else self.minutes_done / max(self.minutes_total, 1)


class Previews:
    """The preview runs of one engine (`engine.alerts.previews`): owns `preview_runs`."""

    def __init__(self, infra: Infra, replay: Replay) -> None:
        self.infra = infra
        self.replay = replay
        self.locks = infra.data_dir / "_locks"
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._stop = threading.Event()

    def submit(self, thresholds: Thresholds, start: dt.datetime, end: dt.datetime) -> PreviewRun:
        """Queue a replay of [start, end) with `thresholds` and make sure a worker of this process runs it.

        Raises:
            Conflict: MAX_WAITING runs are waiting already.
        """
        now = self.infra.now()
        total = max(0, int((end - start) // dt.timedelta(minutes=1)))
        with self.infra.store.connect() as con:
            waiting = con.execute("SELECT count(*) FROM preview_runs WHERE status = 'queued'").fetchone()[0]
            if waiting >= MAX_WAITING:
                raise Conflict(f"{waiting} previews are waiting to run; retry when one has started")
            run_id = con.execute(
                "INSERT INTO preview_runs (status, span_start, span_end, thresholds, minutes_total, requested_at) "
                "VALUES ('queued', ?, ?, ?, ?, ?) RETURNING id",
                (iso(start), iso(end), thresholds.model_dump_json(), total, iso(now)),
            ).fetchone()["id"]
            con.execute("DELETE FROM preview_runs WHERE status IN ('done', 'failed', 'abandoned') AND id NOT IN "
                        "(SELECT id FROM preview_runs WHERE status IN ('done', 'failed', 'abandoned') "
                        "ORDER BY id DESC LIMIT ?)", (KEEP_FINISHED,))
        self.start_worker()
        return self.get(int(run_id or 0))

    def get(self, run_id: int) -> PreviewRun:
        """One run; a `running` run whose process died is marked `abandoned` first.

        A queued run also makes sure this process has a worker, so runs queued by a process that has
        since exited are run by the next one that asks.

        Raises:
            NotFound: no such run.
        """
        row = self._row(run_id)
        if row["status"] == "running" and self._orphaned(run_id):
            self._abandon(run_id)
            row = self._row(run_id)
        if row["status"] == "queued":
            self.start_worker()
        return self._run(row)

    def start_worker(self) -> None:
        """Start this process's worker thread unless it runs already (it ends when no run is queued)."""
        with self._worker_lock:
            if self._stop.is_set() or self._worker is not None:
                return
            self._worker = threading.Thread(target=self._work, name="ezstats-preview", daemon=True)
            self._worker.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker: a run in progress stops at its next day and is recorded as failed.

        Runs still queued stay queued for the next worker (this process's next submit, or another's).
        """
        self._stop.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        if self._worker is None:
            self._stop.clear()

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        """Run queued runs, oldest first, until none is left (or the worker is stopped)."""
        while True:
            try:
                ran = self._run_next()
                # The last look happens under the lock `start_worker` takes: a run queued meanwhile is
                # either seen here or finds no worker and starts one.
                with self._worker_lock:
                    if self._stop.is_set() or not (ran or self._queued()):
                        self._worker = None
                        return
            except Exception:  # the store itself failing: logged, and the next submit starts a worker again
                log.exception("preview worker failed")
                with self._worker_lock:
                    self._worker = None
                return

    def _queued(self) -> bool:
        with self.infra.store.connect(write=False) as con:
            return con.execute("SELECT 1 FROM preview_runs WHERE status = 'queued' LIMIT 1").fetchone() is not None

    def _run_next(self) -> bool:
        """Claim and run the oldest queued run; False when there is none."""
        for stale in self._running_ids():
            if self._orphaned(stale):
                self._abandon(stale)
        claimed = self._claim()
        if claimed is None:
            return False
        row, release = claimed
        run_id = row["id"]
        try:
            preview = self.replay(Thresholds.model_validate_json(row["thresholds"]),
                                  dt.datetime.fromisoformat(row["span_start"]),
                                  dt.datetime.fromisoformat(row["span_end"]),
                                  lambda done, total: self._progress(run_id, done), self._stop.is_set)
        except Exception as exc:
            log.exception("preview %d failed", run_id)
            self._finish(run_id, "failed", None, f"{type(exc).__name__}: {exc}")
        else:
            self._finish(run_id, "done", preview.model_dump_json(), None)
        finally:
            self._lock_path(run_id).unlink(missing_ok=True)
            release()
        return True

    def _claim(self) -> tuple[sqlite3.Row, Callable[[], None]] | None:
        """The oldest queued run, now `running` and ours, with its lock's release; None when none is queued.

        The lock is taken before the status changes, so whoever reads `running` finds the lock held.
        """
        while not self._stop.is_set():
            with self.infra.store.connect(write=False) as con:
                found = con.execute("SELECT min(id) FROM preview_runs WHERE status = 'queued'").fetchone()[0]
            if found is None:
                return None
            release = self._take(found)
            if release is None:
                self._stop.wait(0.05)  # another worker is claiming it
                continue
            with self.infra.store.connect() as con:
                row = con.execute(
                    "UPDATE preview_runs SET status = 'running', started_at = ?, owner = ? "
                    "WHERE id = ? AND status = 'queued' RETURNING *", (iso(self.infra.now()), _owner(), found),
                ).fetchone()
            if row is not None:
                return row, release
            release()
        return None

    def _progress(self, run_id: int, done: int) -> None:
        with self.infra.store.connect() as con:
            con.execute("UPDATE preview_runs SET minutes_done = ? WHERE id = ?", (done, run_id))

    def _finish(self, run_id: int, status: str, result: str | None, error: str | None) -> None:
        with self.infra.store.connect() as con:
            con.execute(
                "UPDATE preview_runs SET status = ?, result = ?, error = ?, finished_at = ?, "
                "minutes_done = CASE WHEN ? = 'done' THEN minutes_total ELSE minutes_done END WHERE id = ?",
                (status, result, error, iso(self.infra.now()), status, run_id),
            )

    # -- reading ------------------------------------------------------------------------------

    def _row(self, run_id: int) -> sqlite3.Row:
        with self.infra.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM preview_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no preview run {run_id}")
        return row  # type: ignore[no-any-return]

    def _run(self, row: sqlite3.Row) -> PreviewRun:
        ahead = None
        if row["status"] == "queued":
            with self.infra.store.connect(write=False) as con:
                ahead = con.execute("SELECT count(*) FROM preview_runs WHERE status IN ('queued', 'running') "
                                    "AND id < ?", (row["id"],)).fetchone()[0]
        return PreviewRun(
            id=row["id"], status=row["status"], start=row["span_start"], end=row["span_end"],
            minutes_done=row["minutes_done"], minutes_total=row["minutes_total"], queued_ahead=ahead,
            requested_at=row["requested_at"], started_at=row["started_at"], finished_at=row["finished_at"],
            error=row["error"], result=Preview.model_validate(json.loads(row["result"])) if row["result"] else None,
        )

    def _running_ids(self) -> list[int]:
        with self.infra.store.connect(write=False) as con:
            return [r["id"] for r in con.execute("SELECT id FROM preview_runs WHERE status = 'running'")]

    def _lock_path(self, run_id: int) -> Path:
        return self.locks / f"preview-{run_id}.lock"

    def _take(self, run_id: int) -> Callable[[], None] | None:
        return self.infra.claim(f"preview:{run_id}", self._lock_path(run_id))

    def _orphaned(self, run_id: int) -> bool:
        """Whether no process holds the run's lock (its runner died, or has just finished)."""
        release = self._take(run_id)
        if release is None:
            return False
        release()
        return True

    def _abandon(self, run_id: int) -> None:
        # Guarded on the status: a run that finished between the two reads keeps its result.
        with self.infra.store.connect() as con:
            con.execute("UPDATE preview_runs SET status = 'abandoned', finished_at = ?, "
                        "error = 'the process running it stopped before it finished' "
                        "WHERE id = ? AND status = 'running'", (iso(self.infra.now()), run_id))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
