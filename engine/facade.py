"""The engine's facade: one object with a method per use case, shared by the API, the CLI and jobs."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from engine import catalog, decoding, queries
from engine.errors import InvalidBatch, QueryError, RecordError
from engine.lake import BatchReceipt, Lake, content_batch_id
from engine.settings import Settings, get_settings
from engine.stats import Stats
from engine.store import ControlStore
from engine.validation import validate

if TYPE_CHECKING:
    from engine.alerts import Alerts
    from engine.jobs import Jobs
    from engine.quotas import Quotas
    from engine.registry import Registry
    from engine.schedules import JobSpec

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The real clock; tests inject their own."""
    return dt.datetime.now(dt.UTC)


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
    """ezstats as a library: open one per data dir and call its methods."""

    def __init__(self, settings: Settings | None = None, clock: Clock = utc_now) -> None:
        self.settings = settings or get_settings()
        self.clock = clock
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = ControlStore(self.settings.control_db)
        self.lake = Lake(self.settings, self.store)
        recovered = self.lake.recover()
        if recovered:
            log.warning("recovered %d staging folder(s) left by crashed writers", recovered)
        self.stats = Stats(self)

    # -- jobs, quotas, registry ------------------------------------------------------------------

    @cached_property
    def jobs(self) -> Jobs:
        """Scheduled jobs: list, run now, run what is due, read their runs (`engine.jobs`)."""
        from engine.jobs import Jobs

        return Jobs(self)

    @cached_property
    def quotas(self) -> Quotas:
        """Key quotas and their usage (`engine.quotas`)."""
        from engine.quotas import Quotas

        return Quotas(self)

    @cached_property
    def registry(self) -> Registry:
        """Names and status of masters, keys and providers (`engine.registry`)."""
        from engine.registry import Registry

        return Registry(self)

    def job_specs(self) -> list[JobSpec]:
        """Every scheduled job with its schedule from the `EZ_SCHEDULE_*` settings."""
        from engine.jobs import standard_specs

        return standard_specs(self)

    # -- alerts -----------------------------------------------------------------------------------

    @cached_property
    def alerts(self) -> Alerts:
        """Alert detection, lifecycle, thresholds and backtest (see `engine.alerts`)."""
        from engine.alerts import Alerts

        return Alerts(self)

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
        return catalog.LOG_RECORDS.has_files(self.settings.data_dir)

    # -- query --------------------------------------------------------------------------------

    def connect(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every lake view (`log_records`, ...) and the shared macros."""
        return catalog.connect(self.settings, threads)

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
        from engine import demo

        end_day = end_day or self.clock().date()
        receipts = []
        for day, table in demo.generate(days, rows_per_day, seed, end_day):
            receipt = self.ingest_table(table, f"demo:{seed}:{rows_per_day}:{day.isoformat()}")
            receipts.append(receipt)
            if progress:
                progress(day, receipt)
        demo_quotas = getattr(demo, "DEMO_QUOTAS", None)
        if demo_quotas:
            self.quotas.seed(demo_quotas)
        return receipts
