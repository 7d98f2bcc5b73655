"""Quarantine: lake files taken out of their table because they cannot be read, and what they held.

A file goes to `<data>/_quarantine/<table>/date=YYYY-MM-DD/<name>`, outside every table, so no glob and
no query reads it again, and is recorded (table `quarantined_files`) with the hours whose records it
held: stats answers covering those hours say so (`Sources.lost_hours`), and the hours' rollups are
recomputed from the records that remain (`engine.lakecheck`). Nothing is deleted: an operator who can
salvage the file's rows can ingest them again (their request_ids are no longer indexed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

from pydantic import BaseModel, Field

from engine.partitions import fsync_dir
from engine.store import ControlStore
from engine.tables import LakeTable
from engine.times import HOUR, iso

FOLDER = "_quarantine"


class QuarantinedFile(BaseModel):
    """A lake file moved to quarantine."""

    id: int
    table: str = Field(description="The lake table it was in.")
    date: dt.date = Field(description="Its date partition.")
    path: str = Field(description="Where it was, relative to the data dir.")
    quarantined_as: str = Field(description="Where it is now, relative to the data dir.")
    reason: str
    rows: int | None = Field(description="Records it held, when its footer still says; null: unknown.")
    hours: list[dt.datetime] = Field(description="UTC hours whose records it held.")
    quarantined_at: dt.datetime


class Quarantine:
    """The quarantine folder and its record (`quarantined_files`)."""

    def __init__(self, store: ControlStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
        self.root = data_dir / FOLDER

    def move(self, table: LakeTable, path: Path, reason: str, rows: int | None, hours: list[dt.datetime],
             now: dt.datetime) -> QuarantinedFile:
        """Move one file of `table` to quarantine and record it; the caller holds the publish lock.

        Args:
            path: the file, inside the table's folder.
            reason: why it cannot stay (e.g. `not valid UTF-8 in column model`).
            rows: how many records it held, if known.
            hours: the UTC hours whose records it held (those whose stats lose records).
        """
        day = dt.date.fromisoformat(path.parent.name.split("=", 1)[1])
        target_dir = self.root / table.folder / path.parent.name
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        if target.exists():  # a file of the same name quarantined before
            target = target_dir / f"{path.stem}.{int(now.timestamp() * 1000)}{path.suffix}"
        os.rename(path, target)
        fsync_dir(path.parent)
        fsync_dir(target_dir)
        relative, moved = str(path.relative_to(self.data_dir)), str(target.relative_to(self.data_dir))
        with self.store.connect() as con:
            row = con.execute(
                "INSERT INTO quarantined_files (table_name, date, path, quarantined_as, reason, rows, hours,"
                " quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (table.name, day.isoformat(), relative, moved, reason, rows,
                 json.dumps(sorted(h.isoformat() for h in hours)), iso(now)),
            ).fetchone()
        return _file(row)

    def files(self) -> list[QuarantinedFile]:
        """Every quarantined file, oldest first."""
        with self.store.connect(write=False) as con:
            return [_file(r) for r in con.execute("SELECT * FROM quarantined_files ORDER BY id")]

    def lost_rows(self, table: str) -> dict[dt.date, int]:
        """Records of `table` quarantined, per day (files whose count is unknown count 0)."""
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT date, sum(coalesce(rows, 0)) AS n FROM quarantined_files WHERE table_name = ?"
                               " GROUP BY date", (table,)).fetchall()
        return {dt.date.fromisoformat(r["date"]): r["n"] for r in rows}

    def lost_hours(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """The UTC hours in [start, end) that lost log records to quarantine, in order."""
        first, last = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT hours FROM quarantined_files WHERE table_name = 'log_records'"
                               " AND date >= ? AND date <= ?", (first.isoformat(), last.isoformat())).fetchall()
        hours = {dt.datetime.fromisoformat(h) for r in rows for h in json.loads(r["hours"])}
        return sorted(h for h in hours if start < h + HOUR and h < end)


def _file(row: sqlite3.Row) -> QuarantinedFile:
    data = dict(row)
    data["table"] = data.pop("table_name")
    data["hours"] = json.loads(data["hours"])
    return QuarantinedFile.model_validate(data)
