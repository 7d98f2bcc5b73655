"""The control-plane store: one SQLite file in WAL mode shared by the server, the CLI and jobs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ControlStore:
    """Small transactional state (batch ledger, alerts, thresholds, jobs) beside the lake.

    Each call opens its own connection: sqlite3 connections must not cross threads, and opening
    one costs well under a millisecond, far less than the fsync every commit pays anyway.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ensured: set[str] = set()
        self._lock = threading.Lock()
        con = sqlite3.connect(path, timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: set once for the file
        finally:
            con.close()

    @contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection whose `with` block is one transaction (committed, or rolled back on error).

        `write=True` takes the write lock up front (BEGIN IMMEDIATE), so a read-then-write block cannot
        fail half-way on a lock upgrade; pure reads pass `write=False` and never wait for writers.
        """
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            # FULL: an acknowledged ingest batch must survive power loss, ledger row included.
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def ensure(self, ddl: str) -> None:
        """Create the tables a module needs (idempotent DDL); run once per process and DDL text."""
        with self._lock:
            if ddl in self._ensured:
                return
            with self.connect() as con:
                for statement in filter(str.strip, ddl.split(";")):
                    con.execute(statement)
            self._ensured.add(ddl)
