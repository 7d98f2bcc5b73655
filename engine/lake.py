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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BatchInProgress
from engine.locks import flock, try_lock
from engine.partitions import fsync_dir
from engine.schema import LOG_RECORD_SCHEMA, PARTITION_COLUMN
from engine.settings import Settings
from engine.store import ControlStore
from engine.tables import LOG_RECORDS
from engine.times import iso, utc_now

log = logging.getLogger(__name__)

PUBLISH_LOCK = ".publish.lock"
OWNER_LOCK = ".owner.lock"


class BatchReceipt(BaseModel):
    """What storing a batch did: the answer a client gets, identical when the batch is sent again."""

    model_config = ConfigDict(frozen=True)

    batch_id: str = Field(description="The Idempotency-Key sent, or sha256: of the body.")
    records: int = Field(description="How many records the batch stored.")
    files: tuple[str, ...] = Field(description="Parquet files the batch was published as, relative to the data dir.")
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


class Lake:
    """Writes batches into `<data>/log_records/` and keeps the ledger that makes replays idempotent."""

    def __init__(self, settings: Settings, store: ControlStore) -> None:
        self.settings = settings
        self.store = store
        self.root = LOG_RECORDS.root(settings.data_dir)
        self.staging = settings.staging_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table, batch_id: str) -> BatchReceipt:
        """Store a validated batch durably, or find it already stored.

        Args:
            table: records of exactly LOG_RECORD_SCHEMA (see `validation.validate`).
            batch_id: the client's Idempotency-Key or `content_batch_id` of the batch.

        Returns:
            The receipt; `replayed` is true when the batch id had already been committed.

        Raises:
            BatchInProgress: another live writer is publishing the same batch id right now.
        """
        if table.schema != LOG_RECORD_SCHEMA:
            raise ValueError("Lake.write takes validated tables only (see engine.validation.validate)")
        earlier = self._receipt(batch_id, recover=True)
        if earlier is not None:
            return earlier
        with self._staging_folder() as folder:
            staged = self._encode(table, folder, batch_id)
            with self.publish_lock():
                earlier = self._receipt(batch_id, recover=False)
                if earlier is not None:
                    return earlier
                self._begin(batch_id, table.num_rows, staged, folder, hours_of(table))
                self._publish(folder, staged)
                self._commit(batch_id)
        return BatchReceipt(batch_id=batch_id, records=table.num_rows, files=tuple(final for _, final in staged))

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
        with self.store.connect() as con:
            row = con.execute(
                "SELECT batch_id, files FROM ingest_batches WHERE staging = ? AND state = 'publishing'",
                (folder.name,),
            ).fetchone()
        if row is not None:
            log.warning("rolling forward batch %s left publishing by a crashed writer", row["batch_id"])
            self._publish(folder, [tuple(pair) for pair in json.loads(row["files"])])
            self._commit(row["batch_id"])
        else:
            log.info("removing staging folder %s of a writer that died before publishing", folder.name)
        shutil.rmtree(folder, ignore_errors=True)

    def _encode(self, table: pa.Table, folder: Path, batch_id: str) -> list[tuple[str, str]]:
        token = hashlib.sha256(batch_id.encode()).hexdigest()[:16]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        jobs: list[tuple[pa.Table, Path]] = []
        staged: list[tuple[str, str]] = []
        for day, part in split_by_day(table):
            for n, start in enumerate(range(0, part.num_rows, self.settings.file_rows)):
                name = f"part-{stamp}-{token}-{n}.parquet"
                path = folder / f"{day.isoformat()}-{name}"
                jobs.append((part.slice(start, self.settings.file_rows), path))
                final = Path(self.root.name) / f"{PARTITION_COLUMN}={day.isoformat()}" / name
                staged.append((path.name, str(final)))
        # The Parquet encoder is single-threaded: a large batch is cut into files encoded side by side.
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda job: write_parquet(job[0], job[1], self.settings.row_group_rows), jobs))
        fsync_dir(folder)
        return staged

    def _publish(self, folder: Path, staged: list[tuple[str, str]]) -> None:
        touched: set[Path] = set()
        for staged_name, final in staged:
            source = folder / staged_name
            target = self.settings.data_dir / final
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
        self, batch_id: str, records: int, staged: list[tuple[str, str]], folder: Path, hours: list[str]
    ) -> None:
        with self.store.connect() as con:
            con.execute(
                "INSERT INTO ingest_batches (batch_id, state, records, files, staging, hours, created_at)"
                " VALUES (?, 'publishing', ?, ?, ?, ?, ?)",
                (batch_id, records, json.dumps(staged), folder.name, json.dumps(hours), iso(utc_now())),
            )

    def _commit(self, batch_id: str) -> None:
        with self.store.connect() as con:
            con.execute(
                "UPDATE ingest_batches SET state = 'committed', committed_at = ? WHERE batch_id = ?",
                (iso(utc_now()), batch_id),
            )

    def _receipt(self, batch_id: str, recover: bool) -> BatchReceipt | None:
        with self.store.connect(write=False) as con:
            row = con.execute(
                "SELECT state, records, files FROM ingest_batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        if row is None:
            return None
        if row["state"] != "committed" and recover:
            # Its writer may have died in this very process (an I/O error mid-publish): finish it.
            self.recover()
            return self._receipt(batch_id, recover=False)
        if row["state"] != "committed":
            raise BatchInProgress(f"batch {batch_id!r} is being stored by another writer; retry shortly")
        files = tuple(final for _, final in json.loads(row["files"]))
        return BatchReceipt(batch_id=batch_id, records=row["records"], files=files, replayed=True)

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


_NO_DICTIONARY = frozenset(
    {"request_id", "created_at", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "quota_cost"}
)


def write_parquet(table: pa.Table, path: Path, row_group_rows: int) -> None:
    """Write one lake file (zstd, row groups sized for parallel scans, min/max statistics) and fsync it."""
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=row_group_rows,
        # Dictionaries only where values repeat: on ids and measures they cost time and grow files.
        use_dictionary=[name for name in table.column_names if name not in _NO_DICTIONARY],
        write_statistics=True,
        sorting_columns=[pq.SortingColumn(table.schema.get_field_index("created_at"))]
        if "created_at" in table.schema.names else None,
    )
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

