"""The engine's facade: one object with a method per use case, shared by the API, the CLI and jobs."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from engine import decoding, demo, queries, snapshot
from engine.alerts import Alerts
from engine.compaction import Compactor
from engine.credentials import Credentials
from engine.errors import ConfigurationError, InvalidBatch, QueryError, RecordError
from engine.infra import Infra
from engine.jobs import Jobs, standard_specs
from engine.lake import BatchReceipt, Lake, client_batch_id, content_batch_id
from engine.lakecheck import LakeChecker, LakeReport
from engine.notifications import Notifications
from engine.partitions import PartitionDrops
from engine.quarantine import Quarantine
from engine.quotas import Quotas
from engine.registry import Registry
from engine.retention import LogCleaner
from engine.settings import Settings, get_settings
from engine.snapshot import Snapshot
from engine.stats import Stats
from engine.store import ControlStore
from engine.tables import LOG_RECORDS
from engine.times import Clock, utc_now
from engine.validation import validate_batch

log = logging.getLogger(__name__)


#: Where `ingest_body_later` decodes and stores the bodies it does not hand to the lake's next group.
_LATER = ThreadPoolExecutor(64, thread_name_prefix="ezstats-ingest")

#: Below this size a body is hashed on the caller's thread: starting a thread costs more than the hash.
_HASH_ALONE_BYTES = 1 << 20


@contextmanager
def _hashing(data: bytes) -> Iterator[Callable[[], str]]:
    """The content hash of a body (`sha256:<hex>`), computed beside decoding (hashlib releases the GIL)."""
    if len(data) < _HASH_ALONE_BYTES:
        digest = content_batch_id(data)
        yield lambda: digest
        return
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(content_batch_id, data)
        yield future.result


def _ids(data: bytes, idempotency_key: str | None, content_id: str | None = None) -> tuple[str, str]:
    """A body's batch id (the client's key, or the body's hash) and fingerprint (the hash's hex)."""
    content_id = content_id or content_batch_id(data)
    return (content_id if idempotency_key is None else client_batch_id(idempotency_key),
            content_id.removeprefix("sha256:"))


class Engine:
    """ezstats as a library: open one per data dir and call its methods.

    This is the composition root: the only place that knows every subsystem. It builds them eagerly, in
    dependency order, each given the shared `Infra` and the named collaborators it uses.
    """

    def __init__(self, settings: Settings | None = None, clock: Clock = utc_now) -> None:
        self.infra = Infra.open(settings or get_settings(), clock)
        recovered = self.infra.lake.recover()
        if recovered:
            log.warning("recovered %d staging folder(s) left by crashed writers", recovered)
        infra = self.infra
        self.intake = infra.lake.intake
        drops = PartitionDrops(infra.store)
        self.quarantine = Quarantine(infra.store, infra.data_dir)
        self.registry = Registry(infra)
        self.stats = Stats(infra, drops, self.quarantine, names=self.registry.names)
        self.credentials = Credentials(infra, set_key_status=self.registry.set_provider_key_status)
        self.quotas = Quotas(infra, names=self.registry.names, costs=self.stats.quota_cost)
        self.registry.on_delete(self.quotas.forget_deleted)
        self.registry.on_delete(self.credentials.forget_deleted)
        self.alerts = Alerts(infra, quotas=self.quotas, inactive=self.registry.inactive,
                             credentials=self.credentials.states, deleted=self.registry.deleted)
        self.credentials.on_change(self.alerts.credential_changed)
        self.notifications = Notifications(infra, self.alerts.history, names=self.registry.names)
        self.alerts.history.add_source(self.notifications.history)
        self.cleaner = LogCleaner(infra, self.stats.daily, self.stats.rollups, drops)
        self.compactor = Compactor(infra)
        self.lakecheck = LakeChecker(infra, self.stats.rollups, self.stats.daily, drops, self.quarantine)
        self.jobs = Jobs(infra, standard_specs(infra, self.stats, self.alerts, self.cleaner, self.compactor,
                                               self.quotas, self.credentials, self.notifications))

    @property
    def settings(self) -> Settings:
        """The settings the engine was opened with."""
        return self.infra.settings

    @property
    def store(self) -> ControlStore:
        """The control-plane store (SQLite)."""
        return self.infra.store

    @property
    def lake(self) -> Lake:
        """The lake writer."""
        return self.infra.lake

    @property
    def clock(self) -> Clock:
        """The clock every subsystem reads; replace it to move time (tests, replays)."""
        return self.infra.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.infra.clock = clock

    # -- ingest -------------------------------------------------------------------------------

    def ingest_body(self, body: bytes, content_type: str, idempotency_key: str | None = None,
                    content_encoding: str | None = None) -> BatchReceipt:
        """Validate and store one request body (NDJSON, JSON array or Arrow IPC stream).

        The batch id is the client's Idempotency-Key, bound to the body's hash (its fingerprint): the same
        key with another body is refused. Without a key it is `sha256:` of the (decompressed) body, in a
        namespace a key cannot reach.

        Args:
            body: the raw bytes as received.
            content_type: its media type, e.g. `application/x-ndjson`.
            idempotency_key: the client's Idempotency-Key, if it sent one.
            content_encoding: the body's Content-Encoding (gzip, zstd), if any.

        Raises:
            UnsupportedFormat: unknown content type or encoding.
            PayloadTooLarge: the decompressed body is over EZ_MAX_BODY_BYTES.
            InvalidBatch: the batch is empty or a record is invalid (nothing is stored).
            IdempotencyKeyReused: the key was used before with a different body (nothing is stored).
            BatchInProgress: the same batch id is being stored by another writer.
            DiskFull: the disk is full (nothing is stored).
        """
        data = decoding.decompress(body, content_encoding, self.settings.max_body_bytes)
        rows = self.intake.joinable(data, content_type)
        if rows is not None:  # small NDJSON: decoded with the rest of its commit's group
            batch_id, fingerprint = _ids(data, idempotency_key)
            return self.lake.write_body(data, rows, batch_id, fingerprint)
        with _hashing(data) as digest:
            batch = self.intake.validate(data, content_type)
        batch_id, fingerprint = _ids(data, idempotency_key, digest())
        return self.lake.write(batch, batch_id, fingerprint)

    def ingest_body_later(self, body: bytes, content_type: str, done: Callable[[BatchReceipt | BaseException], None],
                          idempotency_key: str | None = None, content_encoding: str | None = None) -> None:
        """`ingest_body` for a caller that must not block (an event loop): returns at once, and `done` gets the
        receipt or the exception `ingest_body` raises, on an engine thread (or on this one, for a refusal found
        before any work). `done` must not block.

        A small uncompressed NDJSON body only joins the lake's next group here; any other is decoded and stored on
        a thread of the engine's.
        """
        try:
            rows = None if content_encoding else self.intake.joinable(body, content_type)
            if rows is not None:
                decoding.check_size(body, self.settings.max_body_bytes)
                batch_id, fingerprint = _ids(body, idempotency_key)
        except Exception as exc:
            done(exc)
            return
        if rows is None:
            _LATER.submit(contextvars.copy_context().run, self._ingest_then, done, body, content_type, idempotency_key,
                          content_encoding)
            return
        self.lake.write_body_later(body, rows, batch_id, fingerprint, done)

    def _ingest_then(self, done: Callable[[BatchReceipt | BaseException], None], *args: object) -> None:
        try:
            receipt: BatchReceipt | BaseException = self.ingest_body(*args)  # type: ignore[arg-type]
        except Exception as exc:
            receipt = exc
        done(receipt)

    def ingest_file(self, path: Path) -> BatchReceipt:
        """Validate and store one file (.ndjson/.jsonl, .json, .csv, .parquet, optionally .gz or .zst) as one batch.

        The batch id is a hash of the file's bytes, so ingesting a file twice stores it once.
        Raises the same errors as `ingest_body`, with the file's name in the message.
        """
        try:
            data = path.read_bytes()
            with _hashing(data) as digest:
                table, problems = decoding.read_file(path, data)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidBatch([RecordError(0, None, f"{path}: cannot read: {exc}")]) from exc
        content_id = digest()
        return self._store(table, content_id, problems, fingerprint=content_id.removeprefix("sha256:"))

    def ingest_table(
        self, table: pa.Table, batch_id: str | None = None, decode_errors: Iterable[RecordError] = ()
    ) -> BatchReceipt:
        """Validate and store an Arrow table of log records (any compatible column types).

        `batch_id` is an internal id (e.g. `demo:...`), used as given; the table's content hash when None.
        """
        return self._store(table, batch_id, decode_errors)

    def _store(self, table: pa.Table, batch_id: str | None, decode_errors: Iterable[RecordError],
               fingerprint: str | None = None) -> BatchReceipt:
        batch = validate_batch(table, decode_errors=list(decode_errors), max_errors=self.settings.max_errors_reported)
        return self.lake.write(batch, batch_id or content_batch_id(batch.table), fingerprint)

    def snapshot(self, table: str = "log_records") -> Snapshot:
        """The live files of a lake table now, with DuckDB, Polars and Spark statements reading exactly them
        (on object storage the manifest's files: a raw glob of the bucket is not the table).

        Raises:
            InvalidParameter: no lake table has that name.
        """
        return snapshot.take(self.infra, table)

    def check_lake(self, repair: bool = False) -> LakeReport:
        """Check every lake file (readable, exact schema, valid UTF-8) and each day's record count against the
        ingest ledger; with `repair`, move unreadable files to quarantine and recompute what they fed.

        Raises:
            ConfigurationError: the lake is on object storage (not checked there yet).
        """
        if self.infra.lake.objects is not None:
            raise ConfigurationError("`lake check` reads a local lake only; on object storage the manifest "
                                     "decides the live files (see `ezstats snapshot`)")
        return self.lakecheck.check(repair)

    def rotate_secret_key(self, new_key: bool = False) -> dict[str, int]:
        """Re-encrypt every stored secret (credentials, channel URLs and secrets) with the first key in force;
        with `new_key`, first put a new key at the head of `<data>/secret.key`. Returns how many of each.

        Raises:
            InvalidParameter: `new_key` while the keys come from EZ_SECRET_KEY.
            SecretKeyError: a stored secret no configured key decrypts.
        """
        if new_key:
            self.infra.secret_box().add_key()
        return {"credentials": self.credentials.reencrypt(), "channels": self.notifications.reencrypt()}

    def lake_has_records(self) -> bool:
        """Whether any log record file has been published."""
        return self.infra.lake.has_files(LOG_RECORDS)

    # -- query --------------------------------------------------------------------------------

    def connect(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every lake view (`log_records`, ...) and the shared macros."""
        return self.infra.connect(threads)

    def sql(self, query: str) -> pa.Table:
        """Run an analyst's ad-hoc SQL over the views and return Arrow.

        Raises:
            QueryError: DuckDB refused or failed the query.
        """
        con = self.connect()
        try:
            return queries.retrying(lambda: queries.to_arrow(con.sql(query)))
        except duckdb.Error as exc:
            raise queries.damaged(exc) or QueryError(str(exc).strip()) from exc
        finally:
            con.close()

    # -- demo ---------------------------------------------------------------------------------

    def generate_demo(
        self,
        days: int,
        rows_per_day: int,
        seed: int,
        end_day: dt.date | None = None,
        progress: Callable[[dt.date, BatchReceipt], None] | None = None,
    ) -> list[BatchReceipt]:
        """Write `days` days of synthetic gateway traffic ending `end_day` (default: today, UTC), as a
        gateway would have sent it by now: records stop at the engine clock's now. Then seed the demo's
        key quotas and give its masters, keys, providers and provider keys names in the registry.

        Idempotent: each day's records are a fixed sequence, and only the part not stored yet is written
        (see `ingest_demo`), so running it again later adds exactly the records since.
        """
        receipts = self.ingest_demo(days, rows_per_day, seed, end_day, progress)
        self.quotas.seed(demo.DEMO_QUOTAS)
        self.registry.sync(demo.registry())
        return receipts

    def ingest_demo(
        self,
        days: int,
        rows_per_day: int,
        seed: int,
        end_day: dt.date | None = None,
        progress: Callable[[dt.date, BatchReceipt], None] | None = None,
    ) -> list[BatchReceipt]:
        """The demo's records of `days` days ending `end_day` that are due by now and not stored yet.

        A demo day is a fixed sequence sorted by time (`demo.generate_day`); what the lake holds of it is a
        prefix, counted by its request ids. The rest up to now is one batch whose id names the day and
        the rows, so a retry stores it once, and `ezstats demo --follow` calling this every second
        streams the day as it happens. A whole day keeps the id `demo:<seed>:<rows>:<day>`.
        """
        now = self.clock()
        end_day = end_day or now.date()
        receipts = []
        for day, table in demo.generate(days, rows_per_day, seed, end_day):
            due = demo.until(table, now)
            have = self._demo_rows(day)
            if due.num_rows <= have:
                continue
            part = due.slice(have)
            whole = have == 0 and part.num_rows == table.num_rows
            batch = f"demo:{seed}:{rows_per_day}:{day.isoformat()}" + (
                "" if whole else f":{have}-{have + part.num_rows}")
            receipt = self.ingest_table(part, batch)
            receipts.append(receipt)
            if progress:
                progress(day, receipt)
        return receipts

    def _demo_rows(self, day: dt.date) -> int:
        """How many of a demo day's records the lake holds (their request ids name the day)."""
        if day not in set(self.infra.lake.days(LOG_RECORDS)):
            return 0
        con = self.connect()
        try:
            found = queries.retrying(lambda: con.execute(
                "SELECT count(*) FROM log_records WHERE date = ? AND starts_with(request_id, ?)",
                [day, demo.request_prefix(day)]).fetchone())
        finally:
            con.close()
        return int(found[0]) if found else 0
