"""The raw part of stats answers (the open hour, hours dirtied since the last rollup refresh), kept file
by file between requests.

A lake file never changes once published: a batch adds files; compaction and retention swap or drop
whole folders, giving files new identities. What one file adds to a query of a given shape (filters,
grouping, raw window) is therefore fixed once the file holds no record at or after the period's end,
which its footer statistics tell. Per shape, the reader keeps the merged part of the files it has read
(added to the rollup part of the answer: a `merging.Tally`) and reads only files that are new, so a
dashboard polling while batches land scans each batch once, not the whole open hour per request. A
file reaching past the end (a gateway clock running ahead, demo data) is read on every request, bounded
by the end.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine import queries
from engine.errors import LakeDamaged, QueryError
from engine.objectlake import ObjectLake
from engine.schema import PARTITION_COLUMN
from engine.tables import LOG_RECORDS

T = TypeVar("T")
PARTS_KEPT = 64            # query shapes whose raw part is kept
#: What the parts kept may cost together, in their `num_rows` (rows, or 8-byte cells: ~128 MB), and one part: a
#: part holding the rollup part of its answer (a seed) holds its histogram matrix, up to histograms.DENSE_CELLS
#: cells. A larger part is not kept.
KEPT_MAX_ROWS = 16_000_000
PART_MAX_ROWS = 4_000_000
SPANS_KEPT = 100_000       # file spans remembered
ATTEMPTS = 4
#: The span of a file without records: before any period, so it is never read.
EMPTY = (dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.min.replace(tzinfo=dt.UTC))


@dataclass(frozen=True)
class LakeFile:
    """A log_records file and the span of its created_at values (None: the footer does not say)."""

    path: str
    identity: tuple[str, int, int, int]  # path, inode, size, mtime: a replaced file is another file
    first: dt.datetime | None
    last: dt.datetime | None

    def ends_before(self, end: dt.datetime) -> bool:
        """Whether every record of the file is before `end`."""
        return self.last is not None and self.last < end


class LakeFiles:
    """Lists the log_records files that may hold records of a time range."""

    def __init__(self, root: Path, objects: ObjectLake | None = None) -> None:
        self.root = root
        #: On object storage the live files of a day are the manifest's, never a listing of the bucket.
        self.objects = objects
        self._spans: dict[tuple[str, int, int, int], tuple[dt.datetime | None, dt.datetime | None]] = {}
        self._listed: dict[str, tuple[int, LakeFile]] = {}  # a path's file as last listed, by its directory inode
        self._lock = threading.Lock()

    def between(self, start: dt.datetime, end: dt.datetime) -> list[LakeFile]:
        """Files of the date partitions of [start, end) whose records may fall in it.

        Raises:
            FileNotFoundError: a file vanished while being listed (compaction or retention); list again.
        """
        out = []
        for day in _days(start, end):
            if self.objects is not None:
                listed = [self._object(f.path) for f in self.objects.manifest.live(LOG_RECORDS.folder, day)]
            else:
                listed = self._folder(self.root / f"{PARTITION_COLUMN}={day.isoformat()}")
            for found in listed:
                if (found.last is not None and found.last < start) or (found.first is not None and found.first >= end):
                    continue
                out.append(found)
        return out

    def _object(self, key: str) -> LakeFile:
        """A live object: its key is its identity (objects are immutable and their names never reused)."""
        assert self.objects is not None
        storage = self.objects.storage
        return self._span_of(storage.path(key), (key, 0, 0, 0),
                             lambda: _created_at_span(storage.arrow_path(key), storage.arrow()))

    def _folder(self, folder: Path) -> list[LakeFile]:
        """A partition's Parquet files by name. Listed with scandir, not glob: a day of a few hundred files between
        compactions took milliseconds of pathlib per request, and every stats request lists its raw days.

        A file already listed under the same inode is the same file, not stat-ed again: a lake file is
        published by a rename and never written in place, and its name (time and random token) is never
        reused, so another file at that path is another inode. That halves the listing of a busy day.
        """
        try:
            entries = sorted((e for e in os.scandir(folder) if e.name.endswith(".parquet")), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        found = []
        listed = self._listed
        for entry in entries:
            path, inode = entry.path, entry.inode()
            known = listed.get(path)
            if known is not None and known[0] == inode:
                found.append(known[1])
                continue
            st = entry.stat()
            file = self._span_of(path, (path, st.st_ino, st.st_size, st.st_mtime_ns), partial(_created_at_span, path))
            with self._lock:
                if len(listed) >= SPANS_KEPT:
                    listed.clear()
                listed[path] = (inode, file)
            found.append(file)
        return found

    def _span_of(self, path: str, identity: tuple[str, int, int, int],
                 read: Callable[[], tuple[dt.datetime | None, dt.datetime | None]]) -> LakeFile:
        with self._lock:
            span = self._spans.get(identity)
        if span is None:
            span = read()
            with self._lock:
                if len(self._spans) >= SPANS_KEPT:
                    self._spans.clear()
                self._spans[identity] = span
        return LakeFile(path, identity, *span)


class Sized(Protocol):
    """A kept part: a table, or what a reader makes of one."""

    @property
    def num_rows(self) -> int: ...


P = TypeVar("P", bound=Sized)


@dataclass(frozen=True)
class _Part:
    files: frozenset[tuple[str, int, int, int]]
    table: Any
    rows: int


class LiveParts:
    """Raw parts of stats answers, per query shape, extended with each new file; one per reader."""

    def __init__(self, root: Path, objects: ObjectLake | None = None) -> None:
        self.files = LakeFiles(root, objects)
        self._parts: OrderedDict[tuple[Any, ...], _Part] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, con: duckdb.DuckDBPyConnection, query: str, prepare: Callable[[pa.Table], Any],
             merge: Callable[[P, Any], P], shape: dict[str, Any], files: list[LakeFile], end: dt.datetime,
             seed: P | None = None, seed_key: Any = None) -> P | None:
        """What `query` gives over the raw records before `end` of `files` (LakeFiles.between), added to
        `seed` when given; None if there is neither.

        `query` takes $files and $end besides `shape`; `prepare` makes a part of its rows and `merge`
        adds one to the kept part. A seed (the rollup part of an answer) starts the kept part, which is
        then kept under `seed_key` too: what names the seed. Run it inside `relisting` with the listing:
        a listed file may vanish before it is read.
        """
        settled = [f for f in files if f.ends_before(end)]
        key = (query, seed_key, *sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in shape.items()))
        with self._lock:
            part = self._parts.get(key)
        held = frozenset(f.identity for f in settled)
        if part is not None and not part.files <= held:
            part = None  # a file it holds was compacted or dropped: start over from the files there are now
        new = [f for f in settled if part is None or f.identity not in part.files]
        table = part.table if part is not None else seed
        if new:
            fresh = prepare(queries.run(con, query, files=[f.path for f in new], end=None, **shape))
            table = fresh if table is None else merge(table, fresh)
            if (rows := table.num_rows) <= PART_MAX_ROWS:
                with self._lock:
                    self._parts[key] = _Part(held, table, rows)
                    self._parts.move_to_end(key)
                    total = sum(p.rows for p in self._parts.values())
                    while len(self._parts) > PARTS_KEPT or total > KEPT_MAX_ROWS:
                        total -= self._parts.popitem(last=False)[1].rows
        elif part is not None:
            with self._lock:
                self._parts.move_to_end(key)
        reaching = [f.path for f in files if not f.ends_before(end)]
        if not reaching:
            return table
        tail = prepare(queries.run(con, query, files=reaching, end=end, **shape))
        return tail if table is None else merge(table, tail)


def relisting(read: Callable[[], T]) -> T:
    """Run `read` (which lists lake files), again when a listed file vanished before it was opened."""
    for attempt in range(ATTEMPTS):
        try:
            return read()
        except FileNotFoundError:
            if attempt + 1 == ATTEMPTS:
                raise
        except QueryError as exc:
            if attempt + 1 == ATTEMPTS or not queries.vanished(exc.__cause__):
                raise
    raise AssertionError("unreachable")


def _days(start: dt.datetime, end: dt.datetime) -> Iterator[dt.date]:
    day = start.astimezone(dt.UTC).date()
    last = max(start, end - dt.timedelta(microseconds=1)).astimezone(dt.UTC).date()
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def _created_at_span(path: str, filesystem: pafs.FileSystem | None = None
                     ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """min and max created_at from the row group statistics (None where a row group has none)."""
    try:
        meta = pq.read_metadata(path, filesystem=filesystem)
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise LakeDamaged(str(path), str(exc).strip().splitlines()[0][:300]) from exc
    if meta.num_rows == 0:
        return EMPTY
    column = meta.schema.to_arrow_schema().get_field_index("created_at")
    firsts, lasts = [], []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        firsts.append(stats.min)
        lasts.append(stats.max)
    return (min(firsts), max(lasts)) if firsts else (None, None)
