"""Whole-partition changes a glob reader can never see half-done: swap a folder atomically, or move it out.

A partition folder `<table>/date=D/` only ever changes in three ways: the lake renames a complete file
into it; compaction swaps the whole folder for a new one (`exchange`, Linux `renameat2` with
RENAME_EXCHANGE: both paths stay valid at every instant); the log cleaner moves it out of the table
(`os.rename`). Both of the latter happen under the lake's publish lock and put the old folder, intact,
under `<data>/_retired/<table>/`, deleted after `EZ_LAKE_GRACE_SECONDS`.

What a reader that globs `<table>/date=*/*.parquet` (or `**`) sees: each partition folder listed as it
was before or after a change, never a mix, because a folder's entries never change except by a file
being added. A reader that listed the old folder and opens its files after the swap finds a name
missing and fails ("No such file"), it never counts a row twice or silently skips one: the files a swap
removes from the folder are always there under their old names in the retired copy (so the listing is
whole), and always absent from the new one (the merged rows live in new names). `engine.queries.run`
reruns a query that failed that way.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from engine.errors import LakeDamaged
from engine.schema import PARTITION_COLUMN
from engine.store import ControlStore
from engine.times import iso

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class Partition:
    """One date partition of a table: its folder and the rows of each of its Parquet files."""

    day: dt.date
    path: Path
    files: dict[str, int]

    @property
    def rows(self) -> int:
        """Records in the partition (from the Parquet footers)."""
        return sum(self.files.values())


def list_partitions(table_dir: Path) -> list[Partition]:
    """Every date partition of a table, oldest first, with per-file row counts read from footers."""
    out = []
    prefix = f"{PARTITION_COLUMN}="
    for path in sorted(table_dir.glob(f"{prefix}*")):
        try:
            day = dt.date.fromisoformat(path.name[len(prefix):])
        except ValueError:
            continue
        files = _file_rows(path)
        if files is not None:
            out.append(Partition(day, path, files))
    return out


def _file_rows(path: Path, attempts: int = 5) -> dict[str, int] | None:
    """Rows per file of one folder, listed again if a concurrent swap removed a file mid-way."""
    for _ in range(attempts):
        try:
            return {f.name: _rows_of(f) for f in sorted(path.glob("*.parquet"))}
        except FileNotFoundError:
            if not path.is_dir():
                return None  # dropped meanwhile
    raise RuntimeError(f"{path} kept changing while it was listed")


def _rows_of(path: Path) -> int:
    try:
        return int(pq.read_metadata(path).num_rows)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise LakeDamaged(str(path), str(exc).strip().splitlines()[0][:300]) from exc


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE).

    Raises:
        OSError: the kernel or file system cannot (ENOSYS, EINVAL), or either path is missing.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available in this C library")
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


def retired_path(retired_dir: Path, folder: Path, now: dt.datetime) -> Path:
    """Where a folder taken out of a table goes; the name carries when, for `purge`."""
    stamp = int(now.timestamp() * 1000)
    return retired_dir / f"{folder.name}.{stamp}.{uuid.uuid4().hex[:8]}"


def purge(folder: Path, now: dt.datetime, grace_seconds: int) -> int:
    """Delete the folders under `folder` (named by `retired_path`) retired at least `grace_seconds` ago."""
    if not folder.is_dir():
        return 0
    deleted = 0
    limit = (now.timestamp() - grace_seconds) * 1000
    for path in folder.iterdir():
        parts = path.name.rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) <= limit:
            shutil.rmtree(path, ignore_errors=True)
            deleted += 1
    return deleted


def retire(folder: Path, retired_dir: Path, now: dt.datetime) -> Path:
    """Move a folder, whole, to `retired_dir` (same file system) and make both renames durable."""
    retired_dir.mkdir(parents=True, exist_ok=True)
    target = retired_path(retired_dir, folder, now)
    os.rename(folder, target)
    fsync_dir(folder.parent)
    fsync_dir(retired_dir)
    return target


def fsync_dir(path: Path) -> None:
    """Make a folder's entries durable (a rename into it, a file created in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartitionDrops:
    """The record of raw log partitions the log cleaner dropped (table `log_partition_drops`).

    Rollups and daily stats outlive the raw records: records that arrive for a dropped day later must
    be added to what they hold, not recomputed from the few raw records the day has again (see
    `engine.stats.rollups`), so the rollups read this record and the cleaner writes it.
    """

    def __init__(self, store: ControlStore) -> None:
        self.store = store

    def record(self, day: dt.date, now: dt.datetime) -> None:
        """Note that `day`'s raw partition was just dropped (once more)."""
        with self.store.connect() as con:
            con.execute(
                "INSERT INTO log_partition_drops (date, drops, dropped_at) VALUES (?, 1, ?)"
                " ON CONFLICT (date) DO UPDATE SET drops = log_partition_drops.drops + 1,"
                " dropped_at = excluded.dropped_at",
                (day.isoformat(), iso(now)),
            )

    def days(self) -> dict[dt.date, int]:
        """The days whose raw log partition the cleaner dropped, each with how many times it did.

        The raw records of such a day are only those that arrived after its latest drop; the count tells a
        reader whether the day was dropped again since it last looked.
        """
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT date, drops FROM log_partition_drops").fetchall()
        return {dt.date.fromisoformat(r["date"]): r["drops"] for r in rows}

    def last_dropped(self) -> dict[dt.date, str]:
        """When each dropped day was last dropped (the stored ISO text, comparable with the ledger's times)."""
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT date, dropped_at FROM log_partition_drops").fetchall()
        return {dt.date.fromisoformat(r["date"]): r["dropped_at"] for r in rows}
