"""The lake on object storage: files uploaded whole under unique names, made live by the manifest.

`Lake` delegates here at three points when EZ_LAKE_URL is s3://: a batch's encoded files are uploaded before
the ledger names them (`upload`), the commit records them live in the same transaction (`Manifest.add`), and
a derived table's day is rewritten as a new object plus a manifest swap (`publish`). Readers, compaction and
the log cleaner ask `files`/`partitions` for the live set instead of listing the bucket, so a reader never
sees a file of an uncommitted batch, nor both the small files and the merged file of a compaction.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.manifest import LiveFile, Manifest
from engine.parquetfiles import parquet_bytes
from engine.partitions import Partition
from engine.schema import PARTITION_COLUMN
from engine.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectLake:
    """The storage and the manifest of a lake on object storage."""

    storage: Storage
    manifest: Manifest

    def upload(self, folder: Path, staged: list[list[object]], table: str) -> list[LiveFile]:
        """Upload a batch's staged files of `table` (entries [staged name, key, rows]) with conditional PUTs;
        returns them as manifest rows (not live yet).

        Raises:
            FileExistsError: an object already has one of the (unique) names: nothing is overwritten.
        """
        files = staged_files(staged, table)
        names = {str(key): str(name) for name, key, *_ in staged}
        for file in files:
            if not self.storage.put(file.path, (folder / names[file.path]).read_bytes(), if_absent=True):
                raise FileExistsError(f"{self.storage.path(file.path)} exists; lake file names are never reused")
        return files

    def discard(self, files: list[LiveFile]) -> None:
        """Delete uploaded objects the manifest never made live (a batch found stored meanwhile)."""
        if not files:
            return
        try:
            self.storage.delete([f.path for f in files])
        except OSError:
            log.warning("could not delete %d unused uploads; the purge deletes them later", len(files))

    def urls(self, table: str) -> list[str]:
        """What a reader opens for the live files of `table`."""
        return [self.storage.path(f.path) for f in self.manifest.live(table)]

    def publish(self, table: pa.Table, relative: Path, row_group_rows: int, now: dt.datetime) -> str:
        """A derived table's day rewritten: a new object, then one manifest swap; returns its key.

        The key keeps the file name's stem and adds a unique suffix: objects are never overwritten, so a
        reader holding the old key still reads the old file whole during the grace period.
        """
        key = str(relative.with_name(f"{relative.stem}-{uuid.uuid4().hex[:16]}{relative.suffix}"))
        self.storage.put(key, parquet_bytes(table, row_group_rows), if_absent=True)
        self.manifest.replace_day(relative.parts[0], _day_of(key), LiveFile(key, relative.parts[0], _day_of(key),
                                                                             table.num_rows), now)
        return key

    def read(self, key: str) -> pa.Table:
        """One file, whole (no hive column inferred from its key)."""
        return pq.ParquetFile(io.BytesIO(self.storage.get(key))).read()

    def partitions(self, table: str) -> list[Partition]:
        """The live files of `table` by day, as the folder listing of a local lake gives them."""
        by_day: dict[dt.date, dict[str, int]] = {}
        for f in self.manifest.live(table):
            by_day.setdefault(f.day, {})[f.path.rsplit("/", 1)[1]] = f.rows
        return [Partition(day, Path(f"{table}/{PARTITION_COLUMN}={day.isoformat()}"), files)
                for day, files in sorted(by_day.items())]

    def replace(self, part: Partition, names: list[str], tables: list[pa.Table], row_group_rows: int,
                now: dt.datetime) -> bool:
        """Compaction's swap: upload `tables` as new files of `part`, then, in one transaction, make them live
        and take `names` out, if those are all still live (else delete the uploads and return False)."""
        token, folder = uuid.uuid4().hex[:16], str(part.path)
        stamp = now.strftime("%Y%m%dT%H%M%S%f")
        added = []
        for n, table in enumerate(tables):
            key = f"{folder}/part-{stamp}-{token}-c{n}.parquet"
            self.storage.put(key, parquet_bytes(table, row_group_rows), if_absent=True)
            added.append(LiveFile(key, folder.split("/")[0], part.day, table.num_rows))
        if self.manifest.swap([f"{folder}/{name}" for name in names], added, "compaction", "compacted", now):
            return True
        self.discard(added)
        return False

    def drop(self, table: str, day: dt.date, now: dt.datetime) -> int:
        """The log cleaner's drop: every live file of the day out of the live set, in one transaction (a batch
        committed after the plan was made goes too, as it would with the folder of a local lake)."""
        return self.manifest.drop_day(table, day, now)

    def purge(self, now: dt.datetime, grace_seconds: int, table: str | None = None, orphan_seconds: int = 3600
              ) -> int:
        """Delete files removed from the manifest at least `grace_seconds` ago, and, under `table`, objects the
        manifest never named (uploads of writers that died before committing) `orphan_seconds` old; returns
        how many."""
        expired = self.manifest.expired(now, grace_seconds)
        if expired:
            self.storage.delete(expired)
            self.manifest.forget(expired)
        orphans: list[str] = []
        if table is not None:
            # An upload is committed within seconds of being written: one that old that no manifest row names
            # never will be. Not the grace period: with a short one, another replica's upload waiting for its
            # commit would be deleted under it.
            # Object times are the server's wall clock, so they are compared with this host's, not the engine's.
            old = [key for key, at in self.storage.modified(table).items() if at <= time.time() - orphan_seconds]
            known = self.manifest.known(old)
            orphans = [key for key in old if key not in known]
            if orphans:
                log.warning("deleting %d uploads no committed batch names (writers that died)", len(orphans))
                self.storage.delete(orphans)
        return len(expired) + len(orphans)


def staged_files(staged: list[list[object]], table: str) -> list[LiveFile]:
    """The manifest rows of a batch's files of `table`, from its ledger entries [staged name, key, rows]."""
    return [LiveFile(str(key), table, _day_of(str(key)), int(str(rows)))
            for _, key, rows, *_ in staged if str(key).startswith(table + "/")]


def _day_of(key: str) -> dt.date:
    """The day of a key `<table>/date=YYYY-MM-DD/<name>`."""
    return dt.date.fromisoformat(key.split("/")[1].split("=", 1)[1])
