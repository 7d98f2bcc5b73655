"""The request id index: for each UTC day, the hashes (`engine.request_ids`) of every request_id the lake holds.

It lives beside the tables, outside them, one folder per day:

    <data>/_request_ids/date=YYYY-MM-DD/<batch token>-<n>.rid

A batch writes one `.rid` file per day it stores records in, staged with its Parquet files and renamed
into place with them under the publish lock (so the ledger's recovery rolls both forward together):
the folder of a day always covers exactly the records of that day's partition. A day whose partition
has files but no index folder (a lake written before the index existed, or an index deleted by hand)
is indexed from its files before anything is stored into it. Compaction merges a day's files
(`compact`); the log cleaner drops a day's folder with its partition; `rebuild` recomputes a day's
index from its files (after a file went to quarantine).

Each process keeps the days it recently wrote in memory, as a few sorted arrays merged like a log-
structured tree, and reads only the files it has not seen yet: a batch costs a binary search per
record, never a scan of the day. Every change to a day's folder is made under the publish lock, which
counts its holds (`engine.locks.counted_flock`): a process's listing of a day stands while the count is
the one it read before listing, and a writer adds its own files to its listing, so a day of thousands
of files between compactions is listed again only after another process (or a job) held the lock.

The index is derived data: its files are not fsync-ed (the Parquet files are, and the rename of both is
made durable). A file a crash left empty or garbled fails its length or checksum when read, and the day
is then indexed again from its Parquet files.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from engine.partitions import fsync_dir
from engine.request_ids import HashSet
from engine.schema import PARTITION_COLUMN

log = logging.getLogger(__name__)

FOLDER = "_request_ids"
SUFFIX = ".rid"
DAYS_CACHED = 3  # the days a process keeps in memory: today, yesterday, one late day


class _Day:
    """One day's index in memory: the files read, and their hashes as sorted arrays of decreasing size."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.levels: list[HashSet] = []
        self.listing: frozenset[str] | None = None  # the listing it was last brought up to (the object itself)

    def add(self, name: str, ids: HashSet) -> None:
        self.names.add(name)
        if not len(ids):
            return
        self.levels.append(ids)
        # Merge while the newest array is at least half the one before: O(log n) arrays, each record
        # merged O(log n) times over a day.
        while len(self.levels) > 1 and 2 * len(self.levels[-1]) >= len(self.levels[-2]):
            newest = self.levels.pop()
            self.levels[-1] = self.levels[-1].merge(newest)

    def contains(self, ids: HashSet) -> np.ndarray:
        found = np.zeros(len(ids), bool)
        for level in self.levels:
            found |= level.contains(ids)
        return found


class RequestIndex:
    """The per-day index of request_id hashes (see the module docstring); one per `Lake`."""

    def __init__(self, data_dir: Path, log_root: Path, publish_lock: Callable[[], AbstractContextManager[int]],
                 holds: Callable[[], int]) -> None:
        self.root = data_dir / FOLDER
        self.log_root = log_root
        self.publish_lock = publish_lock
        self.holds = holds  # the publish lock's hold count now
        self.data_dir = data_dir
        self._days: OrderedDict[dt.date, _Day] = OrderedDict()
        self._listed: dict[dt.date, tuple[int, frozenset[str]]] = {}  # a day's index files, as of a hold count
        self._lock = threading.Lock()

    def folder(self, day: dt.date) -> Path:
        """The index folder of one day."""
        return self.root / f"{PARTITION_COLUMN}={day.isoformat()}"

    def relative(self, day: dt.date, name: str) -> str:
        """Where an index file of `day` lives, relative to the data dir (as the ledger records it)."""
        return str(Path(FOLDER) / f"{PARTITION_COLUMN}={day.isoformat()}" / name)

    def seen(self, day: dt.date, ids: HashSet, held: int | None = None) -> np.ndarray:
        """Which of `ids` (a batch's hashes for `day`) the lake already holds: a mask in `ids`' order.

        A day with records but no index yet, or an index file that fails its checks, is indexed from its
        files first, under the publish lock (`held`: the caller holds it already, and this is the count its hold
        began at).
        """
        if not self.folder(day).is_dir() and self._has_records(day):
            self._under_lock(held, lambda: self.ensure(day))
        try:
            with self._lock:
                return self._refresh(day, held).contains(ids)
        except ValueError as exc:
            log.warning("request id index of %s is damaged (%s): indexing the day again from its files", day, exc)
            self._under_lock(held, lambda: self.rebuild(day))
            with self._lock:
                return self._refresh(day, held).contains(ids)

    def names(self, day: dt.date, held: int | None = None) -> frozenset[str]:
        """The index files of a day now: a batch that saw these needs no second look (see `Lake`). `held` as in
        `seen`."""
        return self._names_on_disk(day, held)

    def published(self, paths: list[str], ids: dict[dt.date, HashSet], held: int) -> None:
        """Index files (paths relative to the data dir; `ids`: what each day's holds) that a hold of the publish lock
        which began at count `held` renamed into place, and nothing else changed: a listing of their days as of
        `held` stands, with them, after that hold (count `held` + 2), and this process's copy of the day takes
        their ids without reading them back."""
        for path in paths:
            folder, name = Path(path).parent.name, Path(path).name
            day = dt.date.fromisoformat(folder.removeprefix(f"{PARTITION_COLUMN}="))
            listed = self._listed.get(day)
            if listed is None or listed[0] not in (held, held + 2):
                self._listed.pop(day, None)
                continue
            names = listed[1] | {name}
            with self._lock:
                copy = self._days.get(day)
                if copy is not None and copy.listing is listed[1] and day in ids:
                    copy.add(name, ids[day])
                    copy.listing = names
            self._listed[day] = (held + 2, names)

    def _forget(self, day: dt.date) -> None:
        """Drop this process's copy and listing of a day it changed (under the publish lock): its files were
        replaced, and a listing made earlier in the same hold carries the hold's count."""
        with self._lock:
            self._days.pop(day, None)
            self._listed.pop(day, None)

    def _under_lock(self, held: int | None, work: Callable[[], object]) -> None:
        if held is not None:
            work()
        else:
            with self.publish_lock():
                work()

    def ensure(self, day: dt.date) -> None:
        """Index `day` from its Parquet files if it has some and no index folder; the caller holds the publish
        lock (so no batch publishes into the day meanwhile)."""
        if self.folder(day).is_dir() or not self._has_records(day):
            return
        log.info("indexing the request_ids of %s from its files", day)
        self._write_folder(day, self._from_files(day))
        self._forget(day)

    def rebuild(self, day: dt.date) -> int:
        """Recompute a day's index from the files its partition holds now (e.g. after one went to quarantine);
        the caller holds the publish lock. Returns how many ids it holds."""
        ids = self._from_files(day)
        old = self.folder(day)
        if old.is_dir():
            shutil.rmtree(old)
        self._forget(day)
        if len(ids):
            self._write_folder(day, ids)
        return len(ids)

    def drop(self, day: dt.date) -> None:
        """Forget a day whose partition left the table (the log cleaner); the caller holds the publish lock."""
        folder = self.folder(day)
        if folder.is_dir():
            shutil.rmtree(folder)
            fsync_dir(self.root)
        self._forget(day)

    def stage(self, day: dt.date, ids: HashSet, staging: Path, name: str) -> tuple[str, str]:
        """Write a batch's index file for `day` into its staging folder: (staged name, final relative path)."""
        staged = f"{day.isoformat()}-{name}{SUFFIX}"
        ids.save(staging / staged)
        return staged, self.relative(day, name + SUFFIX)

    def compact(self, day: dt.date) -> int:
        """Merge a day's index files into one (written outside the lock, swapped in under it); returns how many
        files were merged."""
        folder = self.folder(day)
        names = sorted(self._names_on_disk(day))
        if len(names) < 2:
            return 0
        merged = HashSet.empty()
        for name in names:
            merged = merged.merge(HashSet.load(folder / name))
        tmp = self.root / f".compact-{uuid.uuid4().hex}{SUFFIX}"
        merged.save(tmp)
        try:
            with self.publish_lock() as held:
                if not set(names) <= self._names_on_disk(day, held):
                    return 0  # rebuilt or dropped meanwhile
                os.rename(tmp, folder / f"merged-{uuid.uuid4().hex[:16]}{SUFFIX}")
                for name in names:
                    os.unlink(folder / name)
                fsync_dir(folder)
                self._listed.pop(day, None)
        finally:
            tmp.unlink(missing_ok=True)
        return len(names)

    def _refresh(self, day: dt.date, held: int | None = None) -> _Day:
        """This process's copy of a day, brought up to the files on disk (caller holds `_lock`)."""
        on_disk = self._names_on_disk(day, held)
        cached = self._days.get(day)
        if cached is not None and cached.listing is on_disk:  # the kept listing it was brought up to: O(1)
            self._days.move_to_end(day)
            return cached
        if cached is None or not cached.names <= on_disk:  # files merged or rebuilt: read the day again
            cached = _Day()
        for name in sorted(on_disk - cached.names):
            try:
                cached.add(name, HashSet.load(self.folder(day) / name))
            except FileNotFoundError:  # merged away between listing and reading: start over
                self._days.pop(day, None)
                self._listed.pop(day, None)
                return self._refresh(day, held)
        cached.listing = on_disk
        self._days[day] = cached
        self._days.move_to_end(day)
        while len(self._days) > DAYS_CACHED:
            self._days.popitem(last=False)
        return cached

    def _names_on_disk(self, day: dt.date, held: int | None = None) -> frozenset[str]:
        """A day's index files: listed, or as listed before if no hold of the publish lock began since (`held`:
        the caller holds the lock, from that count on, so nothing else changes the folder). A listing made while
        a hold is under way (an odd count) is not kept."""
        count = self.holds() if held is None else held
        listed = self._listed.get(day)
        if listed is not None and listed[0] == count:
            return listed[1]
        try:
            names = frozenset(n for n in os.listdir(self.folder(day)) if n.endswith(SUFFIX))
        except FileNotFoundError:
            names = frozenset()
        if count % 2 == 0:
            if len(self._listed) >= 4 * DAYS_CACHED:
                self._listed.clear()
            self._listed[day] = (count, names)
        return names

    def _has_records(self, day: dt.date) -> bool:
        return any((self.log_root / f"{PARTITION_COLUMN}={day.isoformat()}").glob("*.parquet"))

    def _from_files(self, day: dt.date) -> HashSet:
        ids = HashSet.empty()
        for path in sorted((self.log_root / f"{PARTITION_COLUMN}={day.isoformat()}").glob("*.parquet")):
            column = pq.ParquetFile(path).read(columns=["request_id"]).column("request_id")
            ids = ids.merge(HashSet.of_column(column))
        return ids

    def _write_folder(self, day: dt.date, ids: HashSet) -> None:
        """Create a day's folder holding `ids` in one rename, so the folder never exists half-written."""
        self.root.mkdir(parents=True, exist_ok=True)
        build = self.root / f".build-{uuid.uuid4().hex}"
        build.mkdir()
        try:
            ids.save(build / f"base-{uuid.uuid4().hex[:16]}{SUFFIX}")
            fsync_dir(build)
            os.rename(build, self.folder(day))
            fsync_dir(self.root)
        finally:
            shutil.rmtree(build, ignore_errors=True)
