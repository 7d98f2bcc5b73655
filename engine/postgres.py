"""The control store on PostgreSQL (`EZ_CONTROL_URL=postgresql://...`), shared by every replica.

It answers like the SQLite `ControlStore`, so the stores run unchanged on either:

- `connect(write=True)` is one transaction that holds the store's write lock (a transaction-scoped
  advisory lock) from its start, as SQLite's `BEGIN IMMEDIATE` does: the stores' read-then-write blocks
  (claim a tick, open an alert, append to the ledger) stay race-free across every replica, and the
  ledger's `rowid`s are given in commit order;
- `connect(write=False)` reads one snapshot (REPEATABLE READ) and never waits for writers;
- statements are rewritten by `engine.dialect`; rows are indexed by name and position like
  `sqlite3.Row`; sums come back as int or float, not Decimal.

Connections are pooled per process (a few idle ones kept), since a new one costs a few milliseconds.
"""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from engine import dialect
from engine.errors import ConfigurationError, DiskFull
from engine.migrations import MIGRATIONS, Migration
from engine.store import ControlStore, statements
from engine.times import iso, utc_now

#: The advisory lock every write transaction holds (an arbitrary constant: "ezstats" in ASCII).
WRITE_LOCK = 0x657A7374617473
#: Idle connections kept per process.
POOL_SIZE = 8
#: Seconds to wait for a connection before failing (an unreachable host otherwise waits for the OS's timeout).
CONNECT_TIMEOUT = 10
#: How long a write waits for the write lock before failing (SQLite's busy timeout is the same).
LOCK_TIMEOUT = "30s"


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable by column name (`row["id"]`, `dict(row)`) and by position, like `sqlite3.Row`."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)


def _rows(cursor: Any) -> Any:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class _NumericLoader(Loader):
    """`numeric` (what PostgreSQL's sum() of integers gives) as int when whole, else float: SQLite's types."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        return int(text) if text.lstrip("-").isdigit() else float(text)


class _BoolDumper(Dumper):
    """Python booleans as 0/1: the stores keep flags in integer columns, as SQLite does."""

    oid = 20  # int8
    format = Format.TEXT

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _Cursor:
    """The part of `sqlite3.Cursor` the stores use."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int:
        raise dialect.UnsupportedSql("lastrowid has no PostgreSQL equivalent: use INSERT ... RETURNING")

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Connection:
    """The part of `sqlite3.Connection` the stores use, over one psycopg connection in a transaction."""

    def __init__(self, con: psycopg.Connection[Any]) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> _Cursor:
        cursor = self._con.cursor()
        if params is None or len(params) == 0:
            cursor.execute(dialect.query(sql, params=False))
        else:
            cursor.execute(dialect.query(sql), params)
        return _Cursor(cursor)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> _Cursor:
        cursor = self._con.cursor()
        cursor.executemany(dialect.query(sql), list(rows))
        return _Cursor(cursor)

    @property
    def in_transaction(self) -> bool:
        return self._con.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


class PostgresStore(ControlStore):
    """The control store in a PostgreSQL database (see the module docstring); migrated on open."""

    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._pid = os.getpid()
        try:
            self.migrate()
        except psycopg.OperationalError as exc:
            raise ConfigurationError(f"cannot reach the control store at EZ_CONTROL_URL: {exc}") from exc

    def __repr__(self) -> str:
        return f"PostgresStore({psycopg.conninfo.conninfo_to_dict(self.url).get('host', '')!r})"

    @contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection whose `with` block is one transaction (committed, or rolled back on error);
        `write=True` holds the store's write lock from the start (see the module docstring).

        Raises:
            DiskFull: PostgreSQL could not write for want of space (the transaction is rolled back).
        """
        con = self._begin(write)
        healthy = False
        try:
            try:
                # The stores are typed against sqlite3; this answers the same calls (see _Connection).
                yield cast(sqlite3.Connection, _Connection(con))
            except BaseException:
                if not con.broken:  # a lost connection has rolled back already; keep the store's error
                    con.execute("ROLLBACK")
                    healthy = True
                raise
            con.execute("COMMIT")
            healthy = True
        except psycopg.errors.DiskFull as exc:
            raise DiskFull("the PostgreSQL control store is out of disk space: the change was not saved; retry once "
                           "space is freed") from exc
        finally:
            self._give(con, healthy)

    def _begin(self, write: bool) -> psycopg.Connection[Any]:
        """A connection in a new transaction (holding the write lock for a write). An idle pooled connection
        the server has closed meanwhile (a restart, an idle timeout) is replaced by a new one, once."""
        for attempt in (1, 2):
            con = self._take(fresh=attempt == 2)
            try:
                if write:
                    con.execute("BEGIN")
                    con.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                else:
                    con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                return con
            except psycopg.OperationalError:
                lost = con.broken
                con.close()
                if attempt == 2 or not lost:
                    raise
        raise AssertionError("unreachable")

    def version(self) -> int:
        """The schema version of the database: the number of the last migration applied."""
        with self.connect(write=False) as con:
            return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])

    def migrate(self) -> list[int]:
        """Apply, each in its own transaction under the write lock, the migrations the database has not had;
        returns their numbers. Replicas starting at once apply each migration once."""
        applied = []
        with self.connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                        "version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        for migration in MIGRATIONS:
            with self.connect() as con:
                done = con.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,))
                if done.fetchone() is not None:
                    continue
                _apply(con, migration)
            applied.append(migration.version)
        return applied

    def close(self) -> None:
        """Close the idle connections (those in use close when given back)."""
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    def _take(self, fresh: bool = False) -> psycopg.Connection[Any]:
        if os.getpid() != self._pid:  # a forked child must not share its parent's sockets
            self._pool = queue.LifoQueue()
            self._pid = os.getpid()
        while not fresh:
            try:
                con = self._pool.get_nowait()
            except queue.Empty:
                break
            if not con.closed and not con.broken:
                return con
        con = psycopg.connect(self.url, autocommit=True, row_factory=_rows, cursor_factory=psycopg.ClientCursor,
                              connect_timeout=CONNECT_TIMEOUT)
        con.adapters.register_loader("numeric", _NumericLoader)
        con.adapters.register_dumper(bool, _BoolDumper)
        return con

    def _give(self, con: psycopg.Connection[Any], healthy: bool) -> None:
        if healthy and not con.closed and self._pool.qsize() < POOL_SIZE:
            self._pool.put(con)
        else:
            con.close()


def _apply(con: sqlite3.Connection, migration: Migration) -> None:
    for statement in statements(migration.sql):
        con.execute(dialect.ddl(statement))
    con.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, iso(utc_now())))
