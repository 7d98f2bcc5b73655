"""The manifest of an object-storage lake: which files are live, decided by the control store, not by listing.

Object storage has no rename and no atomic folder swap, so a lake on S3 is a set of immutable objects plus
this ledger of them (table `lake_files`):

- an ingest batch's files are uploaded first (invisible: no live row names them), then recorded live in the
  very transaction that commits the batch in the ingest ledger: a batch is all live or not at all;
- compaction and the log cleaner swap rows in one transaction (the merged files live, the small ones removed;
  a dropped day's files removed), and only if the rows they read are still live: of two racing swaps the
  database lets one win;
- a derived table's day (rollups, daily stats) is rewritten by adding its new file and removing the old one
  in one transaction;
- a removed file stays in the bucket for `EZ_LAKE_GRACE_SECONDS`, so a query that listed it just before
  still reads it whole; `purge` deletes it after that, and deletes objects no row names (uploads of writers
  that died before committing) once they are as old.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from engine.store import ControlStore
from engine.times import iso


@dataclass(frozen=True)
class LiveFile:
    """A live file of the manifest."""

    path: str
    table: str
    day: dt.date
    rows: int


class Manifest:
    """The live files of each lake table on object storage (owner of `lake_files`)."""

    def __init__(self, store: ControlStore) -> None:
        self.store = store

    @staticmethod
    def add(con: sqlite3.Connection, files: Iterable[LiveFile], origin: str, now: dt.datetime) -> None:
        """Record `files` live, inside the caller's transaction (the one that commits what they hold)."""
        con.executemany(
            "INSERT INTO lake_files (path, table_name, date, rows, origin, added_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(f.path, f.table, f.day.isoformat(), f.rows, origin, iso(now)) for f in files])

    def live(self, table: str, day: dt.date | None = None) -> list[LiveFile]:
        """The live files of a table (of one day), by day then path."""
        query = "SELECT path, table_name, date, rows FROM lake_files WHERE removed_at IS NULL AND table_name = ?"
        args: tuple[str, ...] = (table,)
        if day is not None:
            query += " AND date = ?"
            args += (day.isoformat(),)
        with self.store.connect(write=False) as con:
            rows = con.execute(query + " ORDER BY date, path", args).fetchall()
        return [LiveFile(r["path"], r["table_name"], dt.date.fromisoformat(r["date"]), r["rows"]) for r in rows]

    def days(self, table: str) -> list[dt.date]:
        """The days a table has live files for, oldest first."""
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT DISTINCT date FROM lake_files WHERE removed_at IS NULL AND table_name = ?"
                               " ORDER BY date", (table,)).fetchall()
        return [dt.date.fromisoformat(r["date"]) for r in rows]

    def signatures(self) -> dict[str, tuple[int, int, int]]:
        """Per table, what changes whenever its live set does: live files, the latest row, removed files."""
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT table_name, sum(CASE WHEN removed_at IS NULL THEN 1 ELSE 0 END), max(rowid),"
                               " sum(CASE WHEN removed_at IS NULL THEN 0 ELSE 1 END)"
                               " FROM lake_files GROUP BY table_name").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def swap(self, removed: Iterable[str], added: Iterable[LiveFile], origin: str, reason: str,
             now: dt.datetime) -> bool:
        """In one transaction: take `removed` out of the live set and put `added` in, if every removed file is
        still live; returns False (changing nothing) when another writer removed one first."""
        removed = sorted(set(removed))
        with self.store.connect() as con:
            if removed:
                marks = ",".join("?" * len(removed))
                live = con.execute(f"SELECT count(*) FROM lake_files WHERE removed_at IS NULL AND path IN ({marks})",
                                   removed).fetchone()[0]
                if live != len(removed):
                    return False
                con.execute(f"UPDATE lake_files SET removed_at = ?, removed_by = ? WHERE path IN ({marks})",
                            (iso(now), reason, *removed))
            self.add(con, added, origin, now)
        return True

    def replace_day(self, table: str, day: dt.date, file: LiveFile, now: dt.datetime) -> list[str]:
        """A derived table's day rewritten: `file` live, the day's previous files removed; returns those."""
        with self.store.connect() as con:
            old = [r["path"] for r in con.execute(
                "SELECT path FROM lake_files WHERE removed_at IS NULL AND table_name = ? AND date = ?",
                (table, day.isoformat())).fetchall()]
            con.execute("UPDATE lake_files SET removed_at = ?, removed_by = 'replaced'"
                        " WHERE removed_at IS NULL AND table_name = ? AND date = ?", (iso(now), table, day.isoformat()))
            self.add(con, [file], "publish", now)
        return old

    def drop_day(self, table: str, day: dt.date, now: dt.datetime) -> int:
        """Take every live file of a table's day out of the live set in one transaction; returns how many."""
        with self.store.connect() as con:
            return con.execute("UPDATE lake_files SET removed_at = ?, removed_by = 'dropped'"
                               " WHERE removed_at IS NULL AND table_name = ? AND date = ?",
                               (iso(now), table, day.isoformat())).rowcount

    def expired(self, now: dt.datetime, grace_seconds: int) -> list[str]:
        """Files removed at least `grace_seconds` ago: safe to delete from the bucket."""
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT path FROM lake_files WHERE removed_at IS NOT NULL AND removed_at <= ?",
                               (iso(now - dt.timedelta(seconds=grace_seconds)),)).fetchall()
        return [r["path"] for r in rows]

    def forget(self, paths: list[str]) -> None:
        """Drop the rows of removed files once their objects are deleted."""
        with self.store.connect() as con:
            con.executemany("DELETE FROM lake_files WHERE path = ? AND removed_at IS NOT NULL", [(p,) for p in paths])

    def known(self, paths: Iterable[str]) -> set[str]:
        """Which of `paths` the manifest names (live or removed)."""
        wanted = list(paths)
        found: set[str] = set()
        with self.store.connect(write=False) as con:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r["path"] for r in con.execute(
                    f"SELECT path FROM lake_files WHERE path IN ({marks})", chunk).fetchall())
        return found
