"""Process configuration: one pydantic-settings object read from `EZ_` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of ezstats; each field is set by the environment variable `EZ_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="EZ_", extra="ignore")

    data_dir: Path = Field(
        Path("./data"),
        description="Root of the lake and of the control-plane database (log_records/, ezstats.db).",
    )
    ingest_token: SecretStr | None = Field(
        None, description="Bearer token required by POST /v1/logs; unset means no auth (loopback only)."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token required by /admin routes; unset means no auth (loopback only)."
    )
    host: str = Field("127.0.0.1", description="Address `ezstats serve` binds to.")
    port: int = Field(8000, description="Port `ezstats serve` listens on.")
    max_body_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Largest ingest request body accepted, in bytes (else 413)."
    )
    row_group_rows: int = Field(
        131_072,
        gt=0,
        description="Rows per Parquet row group; ~128k lets a one-day scan use every core.",
    )
    file_rows: int = Field(
        524_288,
        gt=0,
        description="Most rows per Parquet file a batch writes; larger batches are encoded as several "
        "files in parallel.",
    )
    log_retention_days: int = Field(30, ge=1, description="Days of raw log records kept by the log cleaner.")
    log_max_records: int = Field(
        1_000_000, ge=1, description="Most raw log records kept; the oldest whole days go first."
    )
    max_errors_reported: int = Field(
        100, ge=1, description="Most row/field errors listed when a batch is refused."
    )
    daily_stats_delay_seconds: int = Field(
        300, ge=0, description="How long after midnight UTC a day's stats wait for late batches (seed: 00:05)."
    )
    log_level: str = Field("INFO", description="Python logging level for the engine, API and CLI.")

    @property
    def log_records_dir(self) -> Path:
        """The table folder of raw log records."""
        return self.data_dir / "log_records"

    @property
    def staging_dir(self) -> Path:
        """Where files are written before they are published; outside every table folder."""
        return self.data_dir / "_staging"

    @property
    def control_db(self) -> Path:
        """The control-plane SQLite file (batch ledger, alerts, thresholds, jobs)."""
        return self.data_dir / "ezstats.db"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` or pass their own."""
    return Settings()
