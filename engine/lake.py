"""The lake writer: validated batches become date-partitioned zstd Parquet, published atomically.

A batch is written in three steps so that no reader, not even a glob over `log_records/**`, ever
sees a partial file, and a crash at any moment loses nothing that was acknowledged:

1. encode one file per UTC day into a private folder under `<data>/_staging/` (outside every
   table folder), fsync each file and the folder; the folder is flock-ed while its writer lives;
2. under the data dir's publish lock, record the batch as `publishing` in the ledger (SQLite),
   rename every file into `log_records/date=YYYY-MM-DD/`, fsync the partition folders;
3. mark the batch `committed`, the moment after which it is acknowledged.

Batches written at the same time by one process go through these steps together (group commit,
`engine.group_commit`): one staging folder, one file per UTC day, one ledger transaction recording each
batch's own row as `publishing`, and one marking them all `committed`. Each batch keeps its own id,
fingerprint, receipt and refusals; each ledger row names the group's files it has records in, with its own
row count in each.

`recover()` finishes step 2 for a `publishing` batch (or group) whose writer died (every staged file was
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

import dataclasses
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BatchInProgress, DiskFull, IdempotencyKeyReused, InvalidBatch
from engine.group_commit import GroupCommitter
from engine.intake import Intake
from engine.locks import counted_flock, flock, holds, try_lock
from engine.manifest import LiveFile
from engine.objectlake import ObjectLake, staged_files
from engine.parquetfiles import write_parquet
from engine.partitions import fsync_dir
from engine.request_ids import HashSet
from engine.request_index import FOLDER as INDEX_FOLDER
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
_US_PER_HOUR = 3_600_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_OWNER = "__batch"  # the column that follows each record to its file while a group is encoded


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


def hours_of(hours: np.ndarray) -> list[str]:
    """The distinct UTC hours (numbered since the epoch) a batch has records in, as ISO strings: what rollups must
    refresh."""
    return [(_EPOCH + dt.timedelta(hours=int(h))).isoformat() for h in np.unique(hours)]


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


#: Encodes Parquet files, one a thread (the encoder is single-threaded): a large batch is cut into files encoded
#: side by side. One pool for the process, as starting threads per commit cost more than a small commit's encode.
_ENCODERS = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="ezstats-encode")


@dataclass(frozen=True)
class _Request:
    """One call of `Lake.write` (a batch) or `Lake.write_body` (a body its group decodes), waiting for its group."""

    batch: ValidBatch | None
    batch_id: str
    fingerprint: str | None
    body: bytes = b""
    rows: int = 0

    @property
    def valid(self) -> ValidBatch:
        """Its validated batch (a body's, once its group decoded it: see `Lake._decoded`)."""
        if self.batch is None:
            raise RuntimeError("a body's batch read before its group decoded it")
        return self.batch


@dataclass(frozen=True)
class _Share:
    """A batch's part of what its group stored: its ledger row and its receipt."""

    records: int
    duplicates: int
    files: list[list[object]]  # [staged name, final path, this batch's rows in it]
    hours: list[str]


def _group_ids(requests: Sequence[_Request], sizes: np.ndarray) -> HashSet:
    """The request_id hashes of a group's batches as one set, rows counted across the concatenated batches."""
    if len(requests) == 1:
        return requests[0].valid.ids
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sets = [request.valid.ids for request in requests]
    firsts = np.concatenate([ids.firsts for ids in sets])
    order = np.argsort(firsts, kind="stable")
    return HashSet(firsts[order], np.concatenate([ids.seconds for ids in sets])[order],
                   np.concatenate([ids.rows + offset for ids, offset in zip(sets, offsets, strict=True)])[order])


@dataclass(frozen=True)
class _Fresh:
    """The records of a batch the lake does not hold yet, with their request_id hashes per UTC day."""

    table: pa.Table
    days: dict[dt.date, HashSet]
    duplicates: int
    #: The index files each day had before the lookup: if a day has the same ones under the publish lock,
    #: no other batch stored ids into it meanwhile.
    looked: dict[dt.date, frozenset[str]]
    #: Which records of the group were kept (None: all).
    kept: np.ndarray | None


class Lake:
    """Writes batches into `<data>/log_records/` and keeps the ledger that makes replays idempotent."""

    def __init__(self, settings: Settings, store: ControlStore, objects: ObjectLake | None = None) -> None:
        self.settings = settings
        #: Decodes the bodies given to `write_body`, a group's at once.
        self.intake = Intake(settings.ingest_group_records, settings.max_errors_reported)
        self.store = store
        #: The lake on object storage (EZ_LAKE_URL s3://...): files uploaded, then made live by the manifest.
        self.objects = objects
        self.root = LOG_RECORDS.root(settings.data_dir)
        self.staging = settings.staging_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.request_ids = RequestIndex(settings.data_dir, self.root, self.publish_lock,
                                        lambda: holds(self.staging / PUBLISH_LOCK))
        #: Batches written at the same time by this process are stored as one group (see `engine.group_commit`).
        self.committer: GroupCommitter[_Request, BatchReceipt] = GroupCommitter(
            self._write_group, lambda request: request.rows, settings.ingest_group_records,
            settings.ingest_group_wait_ms / 1000)

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
        return self.committer.submit(_Request(batch, batch_id, fingerprint, rows=batch.table.num_rows))

    def write_body(self, data: bytes, rows: int, batch_id: str, fingerprint: str | None = None) -> BatchReceipt:
        """Validate and store an NDJSON body of `rows` records (`Intake.joinable`): as `write`, the body decoded and
        validated with the others of its group, in one pass (see `engine.intake`).

        Raises what `write` raises, and `InvalidBatch` or `MalformedBody` for an invalid body (nothing stored).
        """
        return self.committer.submit(_Request(None, batch_id, fingerprint, data, rows))

    def write_body_later(self, data: bytes, rows: int, batch_id: str, fingerprint: str | None,
                         done: Callable[[BatchReceipt | BaseException], None]) -> None:
        """`write_body` without waiting: `done` gets the receipt or the exception once the body's group is committed,
        on the committing thread (see `GroupCommitter.submit_later`)."""
        self.committer.submit_later(_Request(None, batch_id, fingerprint, data, rows), done)

    def _write_group(self, requests: Sequence[_Request]) -> list[BatchReceipt | BaseException]:
        """Store the batches the group committer gathered: one per request, each stored or refused on its own."""
        results: list[BatchReceipt | BaseException | None] = [None] * len(requests)
        requests = self._decoded(requests, results)
        try:
            self._store_group(requests, results)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in str(exc):
                raise
            for i, request in enumerate(requests):
                if results[i] is None:
                    full = DiskFull(f"the disk holding {self.settings.data_dir} is full: nothing of batch "
                                    f"{shown_id(request.batch_id)!r} was stored; retry once space is freed")
                    full.__cause__ = exc
                    results[i] = full
        return [r if r is not None else RuntimeError("batch left unanswered") for r in results]

    def _decoded(self, requests: Sequence[_Request], results: list[BatchReceipt | BaseException | None]
                 ) -> list[_Request]:
        """The group with its bodies decoded and validated as one; a refused body's refusal is its result."""
        bodies = [i for i, request in enumerate(requests) if request.batch is None]
        if not bodies:
            return list(requests)
        decoded = list(requests)
        answers = self.intake.validate_many([requests[i].body for i in bodies], [requests[i].rows for i in bodies])
        for i, batch in zip(bodies, answers, strict=True):
            if isinstance(batch, BaseException):
                results[i] = batch
            else:
                decoded[i] = dataclasses.replace(requests[i], batch=batch, body=b"")
        return decoded

    def _store_group(self, requests: Sequence[_Request], results: list[BatchReceipt | BaseException | None]) -> None:
        """Store every request whose result is None; a batch id sent twice in the group is answered by the first.

        Everything the group stores shares one staging folder, one file per UTC day (more above
        EZ_FILE_ROWS), one ledger transaction for its `publishing` rows and one for their commit: a crash
        before that commit leaves every batch of the group unacknowledged (recovery rolls them forward).
        """
        for _ in range(_RACES):
            live = self._pending(requests, results, recover=True)
            if not live:
                break
            with self._staging_folder() as folder:
                staged, fresh, shares = self._encode_fresh([requests[i] for i in live], folder)
                # On object storage the files are uploaded now, outside the lock: invisible until committed.
                uploaded = self.objects.upload(folder, staged, LOG_RECORDS.folder) if self.objects else []
                with self.publish_lock() as held:
                    # Another process stored some of these request_ids meanwhile, or (the ledger insert finds it)
                    # one of these batch ids: encode the rest again.
                    if self._raced(fresh, held) or not self._begin_group(
                            [(requests[i], share) for i, share in zip(live, shares, strict=True)], folder):
                        if self.objects is not None:
                            self.objects.discard(uploaded)
                        continue
                    try:
                        self._publish(folder, staged)
                        self._commit_staging(folder.name)
                    except (OSError, DiskFull):
                        self._abort(folder, staged, requests[live[0]].batch_id)
                        raise
                self.request_ids.published([str(e[1]) for e in staged if str(e[1]).startswith(INDEX_FOLDER + "/")],
                                           fresh.days, held)
            for i, share in zip(live, shares, strict=True):
                results[i] = BatchReceipt(batch_id=shown_id(requests[i].batch_id), records=share.records,
                                          files=_data_files(share.files), duplicates=share.duplicates,
                                          truncated=requests[i].valid.truncated)
            break
        else:
            for i in self._pending(requests, results, recover=False):
                results[i] = BatchInProgress(f"batch {shown_id(requests[i].batch_id)!r} kept racing other writers "
                                             "storing the same request_ids; retry")
        for i, request in enumerate(requests):  # the second of a batch id sent twice at once: the first's answer
            if results[i] is None:
                try:
                    results[i] = self._receipt(request.batch_id, request.fingerprint, recover=False) or BatchInProgress(
                        f"batch {shown_id(request.batch_id)!r} is being stored by another request; retry shortly")
                except (IdempotencyKeyReused, BatchInProgress) as exc:
                    results[i] = exc

    def _pending(self, requests: Sequence[_Request], results: list[BatchReceipt | BaseException | None],
                 recover: bool) -> list[int]:
        """The requests still to store, answering those already stored (replays) or refused; the first of each id."""
        live: list[int] = []
        ids: set[str] = set()
        rows = self._ledger_rows([r.batch_id for i, r in enumerate(requests) if results[i] is None])
        for i, request in enumerate(requests):
            if results[i] is not None or request.batch_id in ids:
                continue
            try:
                earlier = self._receipt(request.batch_id, request.fingerprint, recover=recover, rows=rows)
                request.valid.ids  # noqa: B018 - a request_id twice in the batch refuses it alone
            except (IdempotencyKeyReused, BatchInProgress, InvalidBatch) as exc:
                results[i] = exc
                continue
            if earlier is not None:
                results[i] = earlier
                continue
            ids.add(request.batch_id)
            live.append(i)
        return live

    def _encode_fresh(self, requests: Sequence[_Request], folder: Path
                      ) -> tuple[list[list[object]], _Fresh, list[_Share]]:
        """Encode the batches as one, while their request_ids are hashed and looked up; re-encode only the records
        the lake does not hold yet, when some were held (a re-sent record is the exception, so it pays the extra
        pass). A request_id in two batches of the group is stored with the first.

        Returns the staged entries of the group, its fresh records, and each batch's share of them.
        """
        table = requests[0].valid.table if len(requests) == 1 else pa.concat_tables(r.valid.table for r in requests)
        sizes = np.array([r.valid.table.num_rows for r in requests], np.int64)
        owner = np.repeat(np.arange(len(requests), dtype=np.int32), sizes)
        token = _token(requests[0].batch_id)
        jobs, staged, counts = self._plan(table, folder, token, owner, len(requests))
        pending = [_ENCODERS.submit(write_parquet, piece, path, self.settings.row_group_rows) for piece, path in jobs]
        try:
            fresh = self._fresh(table, _group_ids(requests, sizes), len(requests) > 1)  # meanwhile, on this thread
            staged_ids, id_counts = self._stage_ids(fresh, folder, token, owner, len(requests))
        finally:
            wait(pending)  # nothing may still write into the staging folder once this returns or raises
        for done in pending:
            done.result()
        if fresh.duplicates:
            for name, *_ in staged:
                (folder / str(name)).unlink()
            kept_owner = owner[fresh.kept] if fresh.kept is not None else owner
            staged, counts = self._encode(fresh.table, folder, token, kept_owner, len(requests))
        fsync_dir(folder)
        stored = np.bincount(owner[fresh.kept] if fresh.kept is not None else owner, minlength=len(requests))
        entries = staged + staged_ids
        per_file = counts + id_counts
        shares = []
        start = 0
        # One pass for the group: per batch, Arrow's fixed cost per call was most of a small batch's share.
        hours = fresh.table.column("created_at").cast(pa.int64()).to_numpy() // _US_PER_HOUR
        for n, size in enumerate(sizes):
            records = int(stored[n])
            mine = [[*entry[:2], int(count[n])] for entry, count in zip(entries, per_file, strict=True) if count[n]]
            shares.append(_Share(records, int(size) - records, mine, hours_of(hours[start:start + records])))
            start += records
        return entries, fresh, shares

    def _fresh(self, table: pa.Table, ids: HashSet, grouped: bool) -> _Fresh:
        """Drop the records whose request_id the lake holds for their day, or an earlier batch of the group holds;
        keep the others' hashes by day."""
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
            repeated = of_day.duplicates() if grouped else []  # across batches only: each was checked alone
            if repeated:
                later = np.isin(of_day.rows, np.array([row for _, row in repeated], np.int64))
                dropped.append(of_day.rows[later])
                of_day = of_day.select(~later)
            looked[day] = self.request_ids.names(day)
            seen = self.request_ids.seen(day, of_day)
            if seen.any():
                dropped.append(of_day.rows[seen])
                of_day = of_day.select(~seen)
            days[day] = of_day
        if not dropped:
            return _Fresh(table, days, 0, looked, None)
        keep = np.ones(table.num_rows, bool)
        keep[np.concatenate(dropped)] = False
        return _Fresh(table.filter(pa.array(keep)), days, int((~keep).sum()), looked, keep)

    def _raced(self, fresh: _Fresh, held: int) -> bool:
        """Under the publish lock (`held`: its hold count, see `publish_lock`): whether the index now holds some of
        the ids (another writer's batch)."""
        return any(self.request_ids.seen(day, ids, held=held).any() for day, ids in fresh.days.items()
                   if len(ids) and _changed(self.request_ids.names(day, held), fresh.looked.get(day)))

    def _stage_ids(self, fresh: _Fresh, folder: Path, token: str, owner: np.ndarray, batches: int
                   ) -> tuple[list[list[object]], list[np.ndarray]]:
        """Stage the group's request index file of each day; with each, how many of its ids each batch has."""
        name = f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}-{token}"
        entries, counts = [], []
        for day, ids in sorted(fresh.days.items()):
            if len(ids):
                entries.append([*self.request_ids.stage(day, ids, folder, name), len(ids)])
                counts.append(np.bincount(owner[ids.rows], minlength=batches))
        return entries, counts

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
            rows = con.execute(
                "SELECT batch_id, files FROM ingest_batches WHERE staging = ? AND state = 'publishing'",
                (folder.name,),
            ).fetchall()
        if rows:  # a group: every batch of it names its own files, together all the folder's
            log.warning("rolling forward batches %s left publishing by a crashed writer",
                        ", ".join(row["batch_id"] for row in rows))
            for row in rows:
                self._publish(folder, json.loads(row["files"]))
            self._commit_staging(folder.name)
        else:
            log.info("removing staging folder %s of a writer that died before publishing", folder.name)
        shutil.rmtree(folder, ignore_errors=True)

    def _encode(self, table: pa.Table, folder: Path, token: str, owner: np.ndarray | None = None, batches: int = 1
                ) -> tuple[list[list[object]], list[np.ndarray]]:
        """Write records into a staging folder: [staged name, final path, rows] per file, and per file how many
        rows each batch of the group has in it (`owner`: the batch of each row; None: one batch)."""
        jobs, staged, counts = self._plan(table, folder, token, owner, batches)
        if jobs:
            # The Parquet encoder is single-threaded: a large batch is cut into files encoded side by side.
            list(_ENCODERS.map(lambda job: write_parquet(job[0], job[1], self.settings.row_group_rows), jobs))
        fsync_dir(folder)
        return staged, counts

    def _plan(self, table: pa.Table, folder: Path, token: str, owner: np.ndarray | None = None, batches: int = 1
              ) -> tuple[list[tuple[pa.Table, Path]], list[list[object]], list[np.ndarray]]:
        """The files records are encoded into: (table slice, staged path) jobs, their staged entries, and per file
        the rows of each batch of the group in it."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        if owner is not None:  # sorted along with the records, then counted per file and dropped
            table = table.append_column(_OWNER, pa.array(owner, pa.int32()))
        jobs: list[tuple[pa.Table, Path]] = []
        staged: list[list[object]] = []
        counts: list[np.ndarray] = []
        for day, part in split_by_day(table):
            for n, start in enumerate(range(0, part.num_rows, self.settings.file_rows)):
                name = f"part-{stamp}-{token}-{n}.parquet"
                path = folder / f"{day.isoformat()}-{name}"
                piece = part.slice(start, self.settings.file_rows)
                if owner is None:
                    counts.append(np.array([piece.num_rows]))
                else:
                    counts.append(np.bincount(piece.column(_OWNER).to_numpy(), minlength=batches))
                    piece = piece.drop_columns([_OWNER])
                jobs.append((piece, path))
                final = Path(self.root.name) / f"{PARTITION_COLUMN}={day.isoformat()}" / name
                staged.append([path.name, str(final), piece.num_rows])
        return jobs, staged, counts

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

    def _begin_group(self, shares: list[tuple[_Request, _Share]], folder: Path) -> bool:
        """Record every batch of a group as `publishing` from one staging folder, in one transaction; False
        (nothing recorded) when another writer recorded one of these batch ids first."""
        now = iso(utc_now())
        with self.store.connect() as con:
            con.executemany(
                "INSERT INTO ingest_batches (batch_id, state, records, files, staging, hours, created_at,"
                " fingerprint, duplicates, truncated) VALUES (?, 'publishing', ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (batch_id) DO NOTHING",
                [(request.batch_id, share.records, json.dumps(share.files), folder.name, json.dumps(share.hours), now,
                  request.fingerprint, share.duplicates, request.valid.truncated) for request, share in shares],
            )
            # `state = 'publishing'` in every lookup by staging folder: the index (ingest_batches_publishing)
            # holds only those rows, and without it each lookup reads the whole ledger.
            recorded = con.execute("SELECT count(*) FROM ingest_batches WHERE staging = ? AND state = 'publishing'",
                                   (folder.name,)).fetchone()
            if recorded[0] != len(shares):
                # A replica on another host, whose publish lock this one does not hold, began one of these batch
                # ids between the check and here: record none, and let the caller look again.
                con.execute("DELETE FROM ingest_batches WHERE staging = ? AND state = 'publishing'", (folder.name,))
                return False
        return True

    def _commit_staging(self, staging: str) -> None:
        """Mark every batch published from a staging folder committed, at once: a group is acknowledged whole."""
        with self.store.connect() as con:
            if self.objects is not None:  # the group's objects become live in the transaction that commits it
                rows = con.execute("SELECT batch_id, files FROM ingest_batches WHERE staging = ?"
                                   " AND state = 'publishing'", (staging,)).fetchall()
                files: dict[str, LiveFile] = {}  # a file shared by several batches: its rows are theirs summed
                for row in rows:
                    for f in staged_files(json.loads(row["files"]), LOG_RECORDS.folder):
                        held = files.get(f.path)
                        files[f.path] = f if held is None else dataclasses.replace(held, rows=held.rows + f.rows)
                if files:
                    self.objects.manifest.add(con, files.values(), rows[0]["batch_id"], utc_now())
            con.execute("UPDATE ingest_batches SET state = 'committed', committed_at = ? WHERE staging = ?"
                        " AND state = 'publishing'", (iso(utc_now()), staging))

    def _receipt(self, batch_id: str, fingerprint: str | None, recover: bool,
                 rows: dict[str, sqlite3.Row] | None = None) -> BatchReceipt | None:
        """The receipt of a batch id already stored, or None; `rows`: its group's ledger rows, read at once."""
        row = self._ledger_rows([batch_id]).get(batch_id) if rows is None else rows.get(batch_id)
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

    def _ledger_rows(self, batch_ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        """The ledger rows of these batch ids (those it has), in one read."""
        found: dict[str, sqlite3.Row] = {}
        with self.store.connect(write=False) as con:
            for start in range(0, len(batch_ids), 500):  # well under SQLite's limit of bound parameters
                chunk = list(batch_ids[start:start + 500])
                for row in con.execute(
                        "SELECT batch_id, state, records, files, fingerprint, duplicates, truncated FROM ingest_batches"
                        f" WHERE batch_id IN ({','.join('?' * len(chunk))})", chunk):
                    found[row["batch_id"]] = row
        return found

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

    def publish_lock(self) -> AbstractContextManager[int]:
        """The data dir's publish lock: hold it to change partition folders or the request index (compaction,
        retention). It counts its holds (`counted_flock`), which is how the request index knows its listing of a day
        still holds without listing the folder again."""
        return counted_flock(self.staging / PUBLISH_LOCK)


def _changed(now: frozenset[str], looked: frozenset[str] | None) -> bool:
    """Whether a day's index files differ from those a batch looked at. Usually they are the kept listing itself
    (see `RequestIndex`): then no comparison of thousands of names under the publish lock."""
    return now is not looked and now != looked


def shown_id(batch_id: str) -> str:
    """The batch id a client sees: its own Idempotency-Key, without the ledger's namespace."""
    return batch_id.removeprefix(CLIENT_KEY)


def _token(batch_id: str) -> str:
    return hashlib.sha256(batch_id.encode()).hexdigest()[:16]


def _data_files(staged: list[list[object]]) -> tuple[str, ...]:
    """The Parquet files of a batch's staged entries (its request index files are not part of the receipt)."""
    return tuple(str(entry[1]) for entry in staged if str(entry[1]).startswith(LOG_RECORDS.folder + "/"))
