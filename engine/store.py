"""The control-plane store: one SQLite file in WAL mode shared by the server, the CLI and jobs."""

from __future__ import annotations

import os
import queue
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import DiskFull
from engine.migrations import MIGRATIONS, Migration
from engine.times import iso, utc_now

#: Idle connections kept for the next transactions (more are opened while more run at once).
_IDLE = 8
#: Free space under which an I/O error of SQLite is taken for a full disk.
_NEARLY_FULL = 1 << 20


class ControlStore:
    """Small transactional state (batch ledger, alerts, thresholds, jobs...) beside the lake.

    Opening it applies the migrations the file has not had yet (`engine.migrations`), so every table
    exists before any module uses it. Connections are pooled: a transaction takes an idle one (any thread's,
    one thread at a time) and gives it back. Opening one and setting its pragmas cost about 0.35 ms, a fifth
    of a small ingest group's ledger time when every transaction paid it.
    """

    #: Whether other hosts share it (then jobs coordinate through leases in it, not file locks).
    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spare: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._spare_pid = os.getpid()
        path.parent.mkdir(parents=True, exist_ok=True)
        _use_wal(path)
        self.migrate()
        # Held open, never used: the last connection to a WAL database to close checkpoints and truncates
        # the WAL, which every short-lived connection would otherwise pay (fsyncs, 5-30 ms on a busy disk).
        # SQLite still checkpoints as the WAL grows (every 1,000 pages).
        self._keeper = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._keeper.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

    @contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection whose `with` block is one transaction (committed, or rolled back on error).

        `write=True` takes the write lock up front (BEGIN IMMEDIATE), so a read-then-write block cannot
        fail half-way on a lock upgrade; pure reads pass `write=False` and never wait for writers.

        Raises:
            DiskFull: SQLite could not write because the disk is full (the transaction is rolled back).
        """
        con = self._borrow()
        healthy = False
        try:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                healthy = not con.in_transaction
                raise
            con.execute("COMMIT")
            healthy = True
        except sqlite3.OperationalError as exc:
            healthy = False
            if self._full(exc):
                raise DiskFull(f"the disk holding {self.path.parent} is full: the change was not saved; retry once "
                               "space is freed") from exc
            raise
        finally:
            self._hand_back(con, healthy)

    def _borrow(self) -> sqlite3.Connection:
        if os.getpid() != self._spare_pid:  # a forked child must not use its parent's connections
            self._spare = queue.LifoQueue()
            self._spare_pid = os.getpid()
        try:
            return self._spare.get_nowait()
        except queue.Empty:
            pass
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        # FULL: an acknowledged ingest batch must survive power loss, ledger row included.
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    def _hand_back(self, con: sqlite3.Connection, healthy: bool) -> None:
        """Keep a connection left outside any transaction for the next one (a few idle at most), close others."""
        if healthy and not con.in_transaction and self._spare.qsize() < _IDLE and os.getpid() == self._spare_pid:
            self._spare.put(con)
        else:
            con.close()

    def _full(self, exc: sqlite3.OperationalError) -> bool:
        """Whether SQLite failed for want of space: SQLITE_FULL, or an I/O error (growing the WAL or its shared
        memory file) on a file system with no room left."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL or "full" in str(exc):
            return True
        if code is None or code & 0xFF != sqlite3.SQLITE_IOERR:
            return False
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < _NEARLY_FULL

    def version(self) -> int:
        """The schema version of the file: the number of the last migration applied."""
        with self.connect(write=False) as con:
            return int(con.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> list[int]:
        """Apply, each in its own transaction, the migrations the file has not had; returns their numbers.

        Several processes opening one file at once apply each migration once: the version is read and
        advanced under the write lock.
        """
        applied = []
        for migration in MIGRATIONS:
            with self.connect() as con:
                if con.execute("PRAGMA user_version").fetchone()[0] >= migration.version:
                    continue
                _apply(con, migration)
            applied.append(migration.version)
        return applied


def _use_wal(path: Path, attempts: int = 100) -> None:
    """Put the file in WAL mode (persistent: once per file). Switching takes an exclusive lock that SQLite
    does not wait for, so processes opening a new file at once retry."""
    for attempt in range(attempts):
        con = sqlite3.connect(path, timeout=30)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt + 1 == attempts:
                raise
            time.sleep(0.01 + 0.01 * (attempt % 10))
        finally:
            con.close()


def _apply(con: sqlite3.Connection, migration: Migration) -> None:
    for statement in statements(migration.sql):
        con.execute(statement)
    con.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    con.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, iso(utc_now())))
    con.execute(f"PRAGMA user_version = {int(migration.version)}")


def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of a script (semicolons inside strings and comments do not split)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending.strip()
            pending = ""
    if pending.strip() and not all(p.strip().startswith("--") for p in pending.splitlines() if p.strip()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")
