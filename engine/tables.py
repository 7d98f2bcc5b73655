"""The lake's tables: where each lives under the data dir, its Arrow schema, and which are views.

Every table is Hive-partitioned by UTC day (`<folder>/date=YYYY-MM-DD/`). `log_records` partitions hold
any number of files (one per batch, until compaction); the derived tables hold one file per day with a
fixed name, recomputed whole and replaced atomically (`Lake.publish_file`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from engine.schema import LOG_RECORD_SCHEMA, PARTITION_COLUMN, TIMESTAMP


@dataclass(frozen=True)
class LakeTable:
    """A Hive-partitioned Parquet table under the data dir, exposed as a view of the same name."""

    name: str
    folder: str
    schema: pa.Schema
    #: The one file of each partition for derived tables; None: any number of `*.parquet` files.
    file_name: str | None = None
    partition: str = PARTITION_COLUMN

    def root(self, data_dir: Path) -> Path:
        """The table folder."""
        return data_dir / self.folder

    def partition_dir(self, data_dir: Path, day: dt.date) -> Path:
        """The folder of one day."""
        return self.root(data_dir) / f"{self.partition}={day.isoformat()}"

    def file(self, day: dt.date) -> Path:
        """A derived table's file of one day, relative to the data dir."""
        if self.file_name is None:
            raise ValueError(f"{self.name} holds many files per day")
        return Path(self.folder) / f"{self.partition}={day.isoformat()}" / self.file_name

    def glob(self, data_dir: Path) -> str:
        """The Parquet glob; staging files never match it (they live outside the folder)."""
        return str(self.root(data_dir) / f"{self.partition}=*" / "*.parquet")

    def has_files(self, data_dir: Path) -> bool:
        """Whether any partition file exists yet."""
        return any(self.root(data_dir).glob(f"{self.partition}=*/*.parquet"))

    def days(self, data_dir: Path) -> list[dt.date]:
        """The days whose partition holds the table's file (any Parquet file for log_records), oldest first."""
        pattern = self.file_name or "*.parquet"
        found = set()
        for path in self.root(data_dir).glob(f"{self.partition}=*"):
            try:
                day = dt.date.fromisoformat(path.name.split("=", 1)[1])
            except ValueError:
                continue
            if any(path.glob(pattern)):
                found.add(day)
        return sorted(found)


# -- rollups ----------------------------------------------------------------------------------------

ROLLUP_SCHEMA = pa.schema([
    pa.field("hour", TIMESTAMP),
    pa.field("master_id", pa.int64()),
    pa.field("key_id", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("provider_id", pa.int64()),
    pa.field("provider_key_id", pa.int64()),
    pa.field("status_class", pa.string()),
    pa.field("requests", pa.int64()),
    pa.field("successes", pa.int64()),
    pa.field("errors", pa.int64()),
    pa.field("rate_limited", pa.int64()),
    pa.field("provider_failures", pa.int64()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("quota_cost", pa.int64()),
    pa.field("latency_sum", pa.int64()),
    pa.field("latency_max", pa.int32()),
    pa.field("streams", pa.int64()),
    pa.field("ttft_n", pa.int64()),
    pa.field("ttft_sum", pa.int64()),
    pa.field("ttft_max", pa.int32()),
])

#: How rollup measures merge: by sum, or by max. The SQL macros summed_measure and max_measure
#: (definitions.sql) declare the same split for queries; tests/test_stats_sql.py checks they agree.
SUMMED_MEASURES = ("requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
                   "completion_tokens", "total_tokens", "quota_cost", "latency_sum", "streams", "ttft_n", "ttft_sum")
MAX_MEASURES = ("latency_max", "ttft_max")

HIST_SCHEMA = pa.schema([
    pa.field("hour", TIMESTAMP),
    pa.field("dim", pa.string()),
    pa.field("id", pa.string()),
    pa.field("metric", pa.string()),
    pa.field("b", pa.int16()),
    pa.field("n", pa.int64()),
])

# -- daily stats ------------------------------------------------------------------------------------

TOP_MODEL = pa.struct([("model", pa.string()), ("requests", pa.int64()), ("total_tokens", pa.int64())])

DAILY_SCHEMA = pa.schema([
    pa.field("grain", pa.string()),
    pa.field("master_id", pa.int64()),
    pa.field("key_id", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("provider_id", pa.int64()),
    pa.field("provider_key_id", pa.int64()),
    *(pa.field(name, pa.int64()) for name in (
        "requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
        "completion_tokens", "total_tokens", "quota_cost", "masters", "keys", "streams")),
    pa.field("latency_avg", pa.float64()),
    pa.field("latency_p50", pa.float64()),
    pa.field("latency_p95", pa.float64()),
    pa.field("latency_p99", pa.float64()),
    pa.field("latency_max", pa.int32()),
    pa.field("ttft_avg", pa.float64()),
    pa.field("ttft_p95", pa.float64()),
    pa.field("ttft_max", pa.int32()),
    pa.field("top_models", pa.list_(TOP_MODEL)),
])

# -- the tables -------------------------------------------------------------------------------------

LOG_RECORDS = LakeTable("log_records", "log_records", LOG_RECORD_SCHEMA)
ROLLUPS_HOURLY = LakeTable("rollups_hourly", "rollups_hourly", ROLLUP_SCHEMA, "part.parquet")
LATENCY_HOURLY = LakeTable("latency_hourly", "latency_hourly", HIST_SCHEMA, "part.parquet")
ROLLUPS_DAILY = LakeTable("rollups_daily", "rollups_daily", ROLLUP_SCHEMA, "part.parquet")
LATENCY_DAILY = LakeTable("latency_daily", "latency_daily", HIST_SCHEMA, "part.parquet")
#: What the rollups of a day held when the log cleaner dropped its raw partition (see engine.stats.rollups).
ROLLUPS_BASE = LakeTable("rollups_base", "rollups_base", ROLLUP_SCHEMA, "part.parquet")
LATENCY_BASE = LakeTable("latency_base", "latency_base", HIST_SCHEMA, "part.parquet")
DAILY_STATS = LakeTable("daily_stats", "daily_stats", DAILY_SCHEMA, "daily.parquet")

#: The tables every connection (and `ezstats sql`) sees as views. Not the base tables: only a rollup
#: recompute reads them (it registers their views), and analysts would take them for stats, which they
#: are not once late records arrive.
VIEWS: tuple[LakeTable, ...] = (LOG_RECORDS, ROLLUPS_HOURLY, LATENCY_HOURLY, ROLLUPS_DAILY, LATENCY_DAILY,
                                DAILY_STATS)
