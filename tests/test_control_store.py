"""The SQLite control store keeps a few idle connections for the next transactions, and never hands out one a
failure may have left in an unknown state."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from engine.store import ControlStore


def _ids(con: sqlite3.Connection) -> list[str]:
    return [r[0] for r in con.execute("SELECT batch_id FROM ingest_batches ORDER BY batch_id")]


def _insert(con: sqlite3.Connection, batch_id: str) -> None:
    con.execute("INSERT INTO ingest_batches (batch_id, state, records, files, staging, hours, created_at)"
                " VALUES (?, 'committed', 1, '[]', 's', '[]', '2026-01-01T00:00:00Z')", (batch_id,))


def test_transactions_reuse_a_connection_and_a_failed_one_is_rolled_back(tmp_path: Path):
    store = ControlStore(tmp_path / "ezstats.db")
    with store.connect() as first:
        _insert(first, "a")
    with store.connect(write=False) as second:
        assert second is first and _ids(second) == ["a"]
        assert second.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, set once per connection
        assert second.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(KeyError), store.connect() as con:
        _insert(con, "b")
        raise KeyError("the caller's own error")
    with store.connect() as again:
        assert again is first and again.in_transaction  # kept, and inside the next transaction
        assert _ids(again) == ["a"]  # "b" was rolled back, not left pending on the kept connection
    # Another process (another connection) sees what was committed.
    other = sqlite3.connect(tmp_path / "ezstats.db")
    assert [r[0] for r in other.execute("SELECT batch_id FROM ingest_batches")] == ["a"]
    other.close()


def test_a_connection_sqlite_failed_on_is_closed_not_kept(tmp_path: Path):
    store = ControlStore(tmp_path / "ezstats.db")
    with store.connect() as first:
        pass
    with pytest.raises(sqlite3.OperationalError), store.connect() as con:
        assert con is first
        con.execute("SELECT * FROM no_such_table")
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")  # closed
    with store.connect() as fresh:
        assert fresh is not first
        _insert(fresh, "c")
        assert _ids(fresh) == ["c"]


def test_concurrent_transactions_get_their_own_connections(tmp_path: Path):
    store = ControlStore(tmp_path / "ezstats.db")
    inside = threading.Barrier(2, timeout=10)
    used: list[sqlite3.Connection] = []

    def read() -> None:
        with store.connect(write=False) as con:
            used.append(con)
            inside.wait()  # both transactions open at once
            _ids(con)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(used) == 2 and used[0] is not used[1]
    with store.connect() as con:  # both were kept: the next transactions reuse them
        assert any(con is u for u in used)
