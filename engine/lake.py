"""The lake writer: validated batches become date-partitioned zstd Parquet, published atomically.

A batch is written in three steps so that no reader, not even a glob over `log_records/**`, ever
sees a partial file, and a crash at any moment loses nothing that was acknowledged:

1. encode one file per UTC day into a private folder under `<data>/_staging/` (outside every
   table folder), fsync each file and the folder; the folder is flock-ed while its writer lives;
2. under the data dir's publish lock, record the batch as `publishing` in the ledger (SQLite),
   rename every file into `log_records/date=YYYY-MM-DD/`, fsync the partition folders;
3. mark the batch `committed`, the moment after which it is acknowledged.

`recover()` finishes step 2 for a `publishing` batch whose writer died (every staged file was
already complete, so rolling forward is always possible) and deletes staging folders of writers
that died before it. A batch id seen `committed` again stores nothing and answers as before.

A request_id counts once: records whose request_id the lake already holds for their UTC day (the
request index, `engine.request_index`) are dropped before encoding, and the batch's own ids are staged
as an index file beside its Parquet files, published with them. Two writers storing the same ids at
once find out under the publish lock, where the index is checked again; the later one starts over.

On object storage (EZ_LAKE_URL s3://..., `engine.objectlake`) step 1 also uploads each encoded file whole,
under its final, never reused name; step 2 publishes only the request index files; step 3 records the
batch's objects live in the manifest in the same transaction that marks it committed. Until then no reader
sees them (readers read the manifest's live files, not a listing of the bucket).

A full disk stops a write at any step without leaving anything visible: before step 2 the staging
folder is simply removed; if the ledger cannot record the commit, the files are renamed back out of the
table and the batch is marked aborted (its staging folder renamed `<name>.aborted`), which recovery
finishes by forgetting it. The caller gets `DiskFull` either way.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BatchInProgress, DiskFull, IdempotencyKeyReused
from engine.locks import flock, try_lock
from engine.objectlake import ObjectLake, staged_files
from engine.parquetfiles import write_parquet
from engine.partitions import fsync_dir
from engine.request_ids import HashSet
from engine.request_index import RequestIndex
from engine.schema import LOG_RECORD_SCHEMA, PARTITION_COLUMN
from engine.settings import Settings
from engine.store import ControlStore
from engine.tables import LOG_RECORDS, VIEWS, LakeTable
from engine.times import iso, utc_now
from engine.validation import ValidBatch

log = logging.getLogger(__name__)

PUBLISH_LOCK = ".publish.lock"
OWNER_LOCK = ".owner.lock"
ABORTED = ".aborted"
#: The ledger's namespace of client Idempotency-Keys, apart from content hashes (`sha256:`) and internal ids.
CLIENT_KEY = "key:"
_RACES = 5  # times a write starts over because another writer stored some of its request_ids meanwhile
_US_PER_DAY = 86_400_000_000


def client_batch_id(key: str) -> str:
    """The ledger id of a client's Idempotency-Key: its own namespace, so that no key can name a content hash."""
    return CLIENT_KEY + key


class BatchReceipt(BaseModel):
    """What storing a batch did: the answer a client gets, identical when the batch is sent again."""

    model_config = ConfigDict(frozen=True)

    batch_id: str = Field(description="The Idempotency-Key sent, or sha256: of the body.")
    records: int = Field(description="How many records the batch stored.")
    files: tuple[str, ...] = Field(description="Parquet files the batch was published as, relative to the data dir.")
    duplicates: int = Field(0, description="Records not stored because the lake already held their request_id "
                            "(same UTC day): a record sent twice counts once.")
    truncated: int = Field(0, description="Records whose error_message was cut to its maximum length (2,000 "
                           "characters).")
    #: The batch id was stored before and nothing new was written. Not part of the answer, which is the same
    #: either way: HTTP says it in a header (Idempotent-Replayed), the CLI in its report.
    replayed: bool = Field(False, exclude=True)


@dataclass(frozen=True)
class LedgerEntry:
    """A batch in the ingest ledger, as the rollups read it: its position, state and hours."""

    position: int              # the ledger's rowid: batches are in commit-attempt order
    committed: bool
    hours: tuple[dt.datetime, ...]


def content_batch_id(data: bytes | pa.Table) -> str:
    """The batch id of a batch sent without an Idempotency-Key: a hash of its content."""
    digest = hashlib.sha256()
    if isinstance(data, pa.Table):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        digest.update(sink.getvalue())
    else:
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def hours_of(table: pa.Table) -> list[str]:
    """The distinct UTC hours a batch has records in, as ISO strings: what rollups must refresh."""
    hours = pc.unique(pc.floor_temporal(table.column("created_at"), unit="hour"))
    return sorted(h.isoformat() for h in hours.to_pylist())


def split_by_day(table: pa.Table) -> Iterator[tuple[dt.date, pa.Table]]:
    """Sort a LOG_RECORD_SCHEMA table by created_at and cut it at UTC midnights."""
    if table.num_rows == 0:
        return
    times = table.column("created_at").cast(pa.int64()).to_numpy()
    if (times[1:] < times[:-1]).any():  # gateways mostly send batches in order: skip the copy then
        table = table.take(pc.sort_indices(table.column("created_at")))
    days = table.column("created_at").cast(pa.date32())
    start = 0
    for day in pc.unique(days).to_pylist():
        end = start + pc.sum(pc.equal(days, pa.scalar(day, pa.date32()))).as_py()
        yield day, table.slice(start, end - start)
        start = end


@dataclass(frozen=True)
class _Fresh:
    """The records of a batch the lake does not hold yet, with their request_id hashes per UTC day."""

    table: pa.Table
    days: dict[dt.date, HashSet]
    duplicates: int
    #: The index files each day had before the lookup: if a day has the same ones under the publish lock,
    #: no other batch stored ids into it meanwhile.
    looked: dict[dt.date, frozenset[str]]


class Lake:
    """Writes batches into `<data>/log_records/` and keeps the ledger that makes replays idempotent."""

    def __init__(self, settings: Settings, store: ControlStore, objects: ObjectLake | None = None) -> None:
        self.settings = settings
        self.store = store
        #: The lake on object storage (EZ_LAKE_URL s3://...): files uploaded, then made live by the manifest.
        self.objects = objects
        self.root = LOG_RECORDS.root(settings.data_dir)
        self.staging = settings.staging_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.request_ids = RequestIndex(settings.data_dir, self.root, self.publish_lock)

    def write(self, batch: ValidBatch | pa.Table, batch_id: str, fingerprint: str | None = None) -> BatchReceipt:
        """Store a validated batch durably, or find it already stored.

        Records whose request_id the lake already holds for their UTC day are dropped (counted in the
        receipt's `duplicates`).

        Args:
            batch: a `validation.validate_batch` result (or a table of exactly LOG_RECORD_SCHEMA).
            batch_id: the ledger id: `client_batch_id` of the client's Idempotency-Key, `content_batch_id`
                of the body, or an internal id (`demo:...`).
            fingerprint: the body's sha256 (hex): a batch id already stored with another fingerprint is
                refused, however the two writes interleave.

        Returns:
            The receipt; `replayed` is true when the batch id had already been committed.

        Raises:
            InvalidBatch: a request_id appears twice in the batch (both rows named).
            BatchInProgress: another live writer is publishing the same batch id right now.
            IdempotencyKeyReused: the batch id was stored with a different body.
            DiskFull: the disk is full; nothing of the batch is kept.
        """
        if isinstance(batch, pa.Table):
            batch = ValidBatch.of(batch)
        if batch.table.schema != LOG_RECORD_SCHEMA:
            raise ValueError("Lake.write takes validated tables only (see engine.validation.validate)")
        try:
            return self._write(batch, batch_id, fingerprint)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
                raise DiskFull(f"the disk holding {self.settings.data_dir} is full: nothing of batch "
                               f"{shown_id(batch_id)!r} "
                               "was stored; retry once space is freed") from exc
            raise

    def _write(self, batch: ValidBatch, batch_id: str, fingerprint: str | None) -> BatchReceipt:
        for _ in range(_RACES):
            earlier = self._receipt(batch_id, fingerprint, recover=True)
            if earlier is not None:
                return earlier
            with self._staging_folder() as folder:
                staged, fresh = self._encode_fresh(batch, folder, batch_id)
                # On object storage the files are uploaded now, outside the lock: invisible until committed.
                uploaded = self.objects.upload(folder, staged, LOG_RECORDS.folder) if self.objects else []
                with self.publish_lock():
                    earlier = self._receipt(batch_id, fingerprint, recover=False)
                    if earlier is not None or self._raced(fresh):
                        if self.objects is not None:
                            self.objects.discard(uploaded)
                        if earlier is not None:
                            return earlier
                        continue  # another writer stored some of these request_ids meanwhile: start over
                    self._begin(batch_id, fresh.table.num_rows, staged, folder, hours_of(fresh.table),
                                fingerprint=fingerprint, duplicates=fresh.duplicates, truncated=batch.truncated)
                    try:
                        self._publish(folder, staged)
                        self._commit(batch_id)
                    except (OSError, DiskFull):
                        self._abort(folder, staged, batch_id)
                        raise
            return BatchReceipt(batch_id=shown_id(batch_id), records=fresh.table.num_rows,
                                files=_data_files(staged), duplicates=fresh.duplicates, truncated=batch.truncated)
        raise BatchInProgress(f"batch {batch_id!r} kept racing other writers storing the same request_ids; retry")

    def _encode_fresh(self, batch: ValidBatch, folder: Path, batch_id: str) -> tuple[list[list[object]], _Fresh]:
        """Encode the batch while its request_ids are hashed and looked up; re-encode only the records the lake
        does not hold yet, when some were held (a re-sent record is the exception, so it pays the extra pass).

        Raises:
            InvalidBatch: a request_id appears twice in the batch.
        """
        jobs, staged = self._plan(batch.table, folder, batch_id)
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
            pending = [pool.submit(write_parquet, table, path, self.settings.row_group_rows) for table, path in jobs]
            fresh = self._fresh(batch)  # meanwhile, on this thread
            staged_ids = self._stage_ids(fresh, folder, batch_id)
            for done in pending:
                done.result()
        if fresh.duplicates:
            for name, *_ in staged:
                (folder / str(name)).unlink()
            staged = self._encode(fresh.table, folder, batch_id)
        fsync_dir(folder)
        return staged + staged_ids, fresh

    def _fresh(self, batch: ValidBatch) -> _Fresh:
        """Drop the records whose request_id the lake holds for their day; keep the others' hashes by day."""
        table, ids = batch.table, batch.ids
        micros = table.column("created_at").cast(pa.int64()).to_numpy()
        first, last = int(micros.min()) // _US_PER_DAY, int(micros.max()) // _US_PER_DAY
        day_of_id = (micros // _US_PER_DAY)[ids.rows] if first != last else None
        days: dict[dt.date, HashSet] = {}
        looked: dict[dt.date, frozenset[str]] = {}
        dropped: list[np.ndarray] = []
        for number in range(first, last + 1):
            day = dt.date(1970, 1, 1) + dt.timedelta(days=number)
            of_day = ids if day_of_id is None else ids.select(day_of_id == number)
            if not len(of_day):
                continue
            looked[day] = self.request_ids.names(day)
            seen = self.request_ids.seen(day, of_day)
            if seen.any():
                dropped.append(of_day.rows[seen])
                of_day = of_day.select(~seen)
            days[day] = of_day
        if not dropped:
            return _Fresh(table, days, 0, looked)
        keep = np.ones(table.num_rows, bool)
        keep[np.concatenate(dropped)] = False
        return _Fresh(table.filter(pa.array(keep)), days, int((~keep).sum()), looked)

    def _raced(self, fresh: _Fresh) -> bool:
        """Under the publish lock: whether the index now holds some of the ids (another writer's batch)."""
        return any(self.request_ids.seen(day, ids, locked=True).any() for day, ids in fresh.days.items()
                   if len(ids) and self.request_ids.names(day) != fresh.looked.get(day))

    def _stage_ids(self, fresh: _Fresh, folder: Path, batch_id: str) -> list[list[object]]:
        name = f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}-{_token(batch_id)}"
        return [[*self.request_ids.stage(day, ids, folder, name), len(ids)]
                for day, ids in sorted(fresh.days.items()) if len(ids)]

    def _abort(self, folder: Path, staged: list[list[object]], batch_id: str) -> None:
        """Take a batch whose commit failed back out of the table and forget it (see the module docstring)."""
        for staged_name, final, *_ in staged:
            source, target = folder / str(staged_name), self.settings.data_dir / str(final)
            if target.exists() and not source.exists():
                os.rename(target, source)
        aborted = folder.with_name(folder.name + ABORTED)
        os.rename(folder, aborted)
        try:
            self._forget(folder.name)
        except (OSError, DiskFull):
            log.warning("batch %s aborted; its ledger row goes at the next recovery", batch_id)
            return
        shutil.rmtree(aborted, ignore_errors=True)

    def _forget(self, staging: str) -> None:
        """Delete the ledger row of a batch that never committed (aborted)."""
        with self.store.connect() as con:
            con.execute("DELETE FROM ingest_batches WHERE staging = ? AND state = 'publishing'", (staging,))

    def ledger_after(self, position: int) -> list[LedgerEntry]:
        """The ledger's batches after `position` (0: all), in order: what derived tables have yet to take in."""
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT rowid AS id, state, hours FROM ingest_batches WHERE rowid > ? ORDER BY rowid",
                               (position,)).fetchall()
        return [LedgerEntry(r["id"], r["state"] == "committed",
                            tuple(dt.datetime.fromisoformat(h) for h in json.loads(r["hours"]))) for r in rows]

    def publish_file(self, table: pa.Table, relative: Path) -> Path:
        """Write `table` as one Parquet file at `<data>/relative`, atomically replacing any file there.

        For derived tables (rollups, daily stats) whose partitions are recomputed whole: a reader sees
        the old file or the new one, never neither and never a partial file.
        """
        if self.objects is not None:
            return Path(self.objects.publish(table, relative, self.settings.row_group_rows, utc_now()))
        target = self.settings.data_dir / relative
        with self._staging_folder() as folder:
            staged = folder / target.name
            write_parquet(table, staged, self.settings.row_group_rows)
            fsync_dir(folder)
            created = not target.parent.exists()
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, target)
            fsync_dir(target.parent)
            if created:
                fsync_dir(target.parent.parent)
        return target

    # -- what a table holds, on either backend: the folders of a local lake, the manifest of one on S3 --------

    def days(self, table: LakeTable) -> list[dt.date]:
        """The days `table` has files for, oldest first."""
        if self.objects is not None:
            return self.objects.manifest.days(table.folder)
        return table.days(self.settings.data_dir)

    def has_files(self, table: LakeTable) -> bool:
        """Whether `table` has any file yet."""
        if self.objects is not None:
            return bool(self.objects.manifest.days(table.folder))
        return table.has_files(self.settings.data_dir)

    def views(self) -> dict[str, object]:
        """Per table, what a DuckDB view over it was made from: whether it has files (a local view is a glob,
        which sees new files by itself), or the manifest's signature of its live set (an S3 view lists them)."""
        if self.objects is not None:
            signatures = self.objects.manifest.signatures()
            return {t.name: signatures.get(t.folder) for t in VIEWS}
        return {t.name: t.has_files(self.settings.data_dir) for t in VIEWS}

    def has_day(self, table: LakeTable, day: dt.date) -> bool:
        """Whether a derived table has its file for `day`."""
        if self.objects is not None:
            return bool(self.objects.manifest.live(table.folder, day))
        return (self.settings.data_dir / table.file(day)).is_file()

    def identities(self, table: LakeTable, days: Iterable[dt.date]) -> list[tuple[object, ...]]:
        """What changes whenever a derived table's day is rewritten, per day: its live keys (one manifest read
        for all days), or its file's inode, mtime and size (0s when it has none)."""
        if self.objects is not None:
            keys: dict[dt.date, tuple[str, ...]] = {}
            for f in self.objects.manifest.live(table.folder):
                keys[f.day] = (*keys.get(f.day, ()), f.path)
            return [keys.get(day, ()) for day in days]
        out: list[tuple[object, ...]] = []
        for day in days:
            try:
                st = (self.settings.data_dir / table.file(day)).stat()
            except FileNotFoundError:
                out.append((0, 0, 0))
                continue
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return out

    def recover(self) -> int:
        """Finish or remove what crashed writers left; returns how many staging folders were handled."""
        handled = 0
        with self.publish_lock():
            for folder in sorted(p for p in self.staging.iterdir() if p.is_dir()):
                owner = try_lock(folder / OWNER_LOCK)
                if owner is None:
                    continue  # a live writer is still encoding into it
                try:
                    self._recover_folder(folder)
                    handled += 1
                finally:
                    os.close(owner)
        return handled

    def _recover_folder(self, folder: Path) -> None:
        if folder.name.endswith(ABORTED):  # a batch taken back out when the disk was full: forget it
            self._forget(folder.name.removesuffix(ABORTED))
            shutil.rmtree(folder, ignore_errors=True)
            return
        with self.store.connect() as con:
            row = con.execute(
                "SELECT batch_id, files FROM ingest_batches WHERE staging = ? AND state = 'publishing'",
                (folder.name,),
            ).fetchone()
        if row is not None:
            log.warning("rolling forward batch %s left publishing by a crashed writer", row["batch_id"])
            self._publish(folder, json.loads(row["files"]))
            self._commit(row["batch_id"])
        else:
            log.info("removing staging folder %s of a writer that died before publishing", folder.name)
        shutil.rmtree(folder, ignore_errors=True)

    def _encode(self, table: pa.Table, folder: Path, batch_id: str) -> list[list[object]]:
        """Write the batch's Parquet files into its staging folder: [staged name, final path, rows] each."""
        jobs, staged = self._plan(table, folder, batch_id)
        if jobs:
            # The Parquet encoder is single-threaded: a large batch is cut into files encoded side by side.
            with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
                list(pool.map(lambda job: write_parquet(job[0], job[1], self.settings.row_group_rows), jobs))
        fsync_dir(folder)
        return staged

    def _plan(self, table: pa.Table, folder: Path, batch_id: str
              ) -> tuple[list[tuple[pa.Table, Path]], list[list[object]]]:
        """The files a batch is encoded into: (table slice, staged path) jobs, and their staged entries."""
        token = _token(batch_id)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        jobs: list[tuple[pa.Table, Path]] = []
        staged: list[list[object]] = []
        for day, part in split_by_day(table):
            for n, start in enumerate(range(0, part.num_rows, self.settings.file_rows)):
                name = f"part-{stamp}-{token}-{n}.parquet"
                path = folder / f"{day.isoformat()}-{name}"
                piece = part.slice(start, self.settings.file_rows)
                jobs.append((piece, path))
                final = Path(self.root.name) / f"{PARTITION_COLUMN}={day.isoformat()}" / name
                staged.append([path.name, str(final), piece.num_rows])
        return jobs, staged

    def _publish(self, folder: Path, staged: list[list[object]]) -> None:
        touched: set[Path] = set()
        for staged_name, final, *_ in staged:
            if self.objects is not None and str(final).startswith(LOG_RECORDS.folder + "/"):
                continue  # uploaded already; the commit makes it live
            source = folder / str(staged_name)
            target = self.settings.data_dir / str(final)
            if not source.exists():
                continue  # renamed before a crash; the target is in place
            if not target.parent.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                touched.add(target.parent.parent)
            os.rename(source, target)
            touched.add(target.parent)
        for path in touched:
            fsync_dir(path)

    def _begin(
        self, batch_id: str, records: int, staged: list[list[object]], folder: Path, hours: list[str],
        fingerprint: str | None = None, duplicates: int = 0, truncated: int = 0,
    ) -> None:
        with self.store.connect() as con:
            con.execute(
                "INSERT INTO ingest_batches (batch_id, state, records, files, staging, hours, created_at,"
                " fingerprint, duplicates, truncated) VALUES (?, 'publishing', ?, ?, ?, ?, ?, ?, ?, ?)",
                (batch_id, records, json.dumps(staged), folder.name, json.dumps(hours), iso(utc_now()),
                 fingerprint, duplicates, truncated),
            )

    def _commit(self, batch_id: str) -> None:
        with self.store.connect() as con:
            con.execute(
                "UPDATE ingest_batches SET state = 'committed', committed_at = ? WHERE batch_id = ?",
                (iso(utc_now()), batch_id),
            )
            if self.objects is not None:  # the batch's objects become live in the transaction that commits it
                row = con.execute("SELECT files FROM ingest_batches WHERE batch_id = ?", (batch_id,)).fetchone()
                self.objects.manifest.add(con, staged_files(json.loads(row["files"]), LOG_RECORDS.folder), batch_id,
                                          utc_now())

    def _receipt(self, batch_id: str, fingerprint: str | None, recover: bool) -> BatchReceipt | None:
        with self.store.connect(write=False) as con:
            row = con.execute(
                "SELECT state, records, files, fingerprint, duplicates, truncated FROM ingest_batches"
                " WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        if row is None:
            return None
        if fingerprint is not None and row["fingerprint"] is not None and row["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {shown_id(batch_id)!r} was used for a different body; nothing was stored. "
                "Send a new key for a new batch (the same key retries only the same body)")
        if row["state"] != "committed" and recover:
            # Its writer may have died in this very process (an I/O error mid-publish): finish it.
            self.recover()
            return self._receipt(batch_id, fingerprint, recover=False)
        if row["state"] != "committed":
            raise BatchInProgress(f"batch {shown_id(batch_id)!r} is being stored by another writer; retry shortly")
        return BatchReceipt(batch_id=shown_id(batch_id), records=row["records"],
                            files=_data_files(json.loads(row["files"])), duplicates=row["duplicates"],
                            truncated=row["truncated"], replayed=True)

    @contextmanager
    def _staging_folder(self) -> Iterator[Path]:
        folder = self.staging / uuid.uuid4().hex
        folder.mkdir()
        with flock(folder / OWNER_LOCK):  # while held, recover() leaves the folder to its live writer
            try:
                yield folder
            except BaseException:
                # A folder the ledger still names as publishing is kept for recover() to roll forward.
                if not self._is_publishing(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            shutil.rmtree(folder, ignore_errors=True)

    def _is_publishing(self, folder: Path) -> bool:
        with self.store.connect(write=False) as con:
            row = con.execute(
                "SELECT 1 FROM ingest_batches WHERE staging = ? AND state = 'publishing'", (folder.name,)
            ).fetchone()
        return row is not None

    def publish_lock(self) -> AbstractContextManager[bool]:
        """The data dir's publish lock: hold it to change partition folders (compaction, retention)."""
        return flock(self.staging / PUBLISH_LOCK)


def shown_id(batch_id: str) -> str:
    """The batch id a client sees: its own Idempotency-Key, without the ledger's namespace."""
    return batch_id.removeprefix(CLIENT_KEY)


def _token(batch_id: str) -> str:
    return hashlib.sha256(batch_id.encode()).hexdigest()[:16]


def _data_files(staged: list[list[object]]) -> tuple[str, ...]:
    """The Parquet files of a batch's staged entries (its request index files are not part of the receipt)."""
    return tuple(str(entry[1]) for entry in staged if str(entry[1]).startswith(LOG_RECORDS.folder + "/"))
