"""The engine's facade: one object with a method per use case, shared by the API, the CLI and jobs."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from engine import decoding, demo, queries
from engine.alerts import Alerts
from engine.compaction import Compactor
from engine.errors import InvalidBatch, QueryError, RecordError
from engine.infra import Infra
from engine.jobs import Jobs, standard_specs
from engine.lake import BatchReceipt, Lake, content_batch_id
from engine.partitions import PartitionDrops
from engine.quotas import Quotas
from engine.registry import Registry
from engine.retention import LogCleaner
from engine.settings import Settings, get_settings
from engine.stats import Stats
from engine.store import ControlStore
from engine.tables import LOG_RECORDS
from engine.times import Clock, utc_now
from engine.validation import validate

log = logging.getLogger(__name__)


@contextmanager
def _hashing(data: bytes, batch_id: str | None) -> Iterator[Callable[[], str]]:
    """The batch id, its content hash computed beside decoding (hashlib releases the GIL)."""
    if batch_id is not None:
        yield lambda: batch_id
        return
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(content_batch_id, data)
        yield future.result


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
        drops = PartitionDrops(infra.store)
        self.stats = Stats(infra, drops)
        self.registry = Registry(infra)
        self.quotas = Quotas(infra, names=self.registry.names, costs=self.stats.quota_cost)
        self.registry.on_delete(self.quotas.forget_deleted)
        self.alerts = Alerts(infra, quotas=self.quotas, inactive=self.registry.inactive)
        self.cleaner = LogCleaner(infra, self.stats.daily, self.stats.rollups, drops)
        self.compactor = Compactor(infra)
        self.jobs = Jobs(infra, standard_specs(infra, self.stats, self.alerts, self.cleaner, self.compactor,
                                               self.quotas))

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

    def ingest_body(self, body: bytes, content_type: str, batch_id: str | None = None) -> BatchReceipt:
        """Validate and store one request body (NDJSON, JSON array or Arrow IPC stream).

        Args:
            body: the raw bytes as received.
            content_type: its media type, e.g. `application/x-ndjson`.
            batch_id: the client's Idempotency-Key; the body's hash when absent.

        Raises:
            UnsupportedFormat: unknown content type.
            InvalidBatch: any record is invalid (nothing is stored).
            BatchInProgress: the same batch id is being stored by another writer.
        """
        with _hashing(body, batch_id) as digest:
            table, problems = decoding.decode(body, content_type)
        return self.ingest_table(table, digest(), decode_errors=problems)

    def ingest_file(self, path: Path, batch_id: str | None = None) -> BatchReceipt:
        """Validate and store one file (.ndjson/.jsonl, .json, .csv, .parquet) as one batch.

        The batch id defaults to a hash of the file's bytes, so ingesting a file twice stores it once.
        Raises the same errors as `ingest_body`, with the file's name in the message.
        """
        try:
            data = path.read_bytes()
            with _hashing(data, batch_id) as digest:
                table, problems = decoding.read_file(path, data)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidBatch([RecordError(0, None, f"{path}: cannot read: {exc}")]) from exc
        return self.ingest_table(table, digest(), decode_errors=problems)

    def ingest_table(
        self, table: pa.Table, batch_id: str | None = None, decode_errors: Iterable[RecordError] = ()
    ) -> BatchReceipt:
        """Validate and store an Arrow table of log records (any compatible column types)."""
        records = validate(table, decode_errors=list(decode_errors),
                           max_errors=self.settings.max_errors_reported)
        return self.lake.write(records, batch_id or content_batch_id(records))

    def lake_has_records(self) -> bool:
        """Whether any log record file has been published."""
        return LOG_RECORDS.has_files(self.settings.data_dir)

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
            raise QueryError(str(exc).strip()) from exc
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
        """Write `days` days of synthetic gateway traffic ending `end_day` (default: today, UTC).

        Each day is one batch with a deterministic id, so running the same demo twice stores it once.
        """
        end_day = end_day or self.clock().date()
        receipts = []
        for day, table in demo.generate(days, rows_per_day, seed, end_day):
            receipt = self.ingest_table(table, f"demo:{seed}:{rows_per_day}:{day.isoformat()}")
            receipts.append(receipt)
            if progress:
                progress(day, receipt)
        self.quotas.seed(demo.DEMO_QUOTAS)
        return receipts
