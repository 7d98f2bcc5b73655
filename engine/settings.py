"""Process configuration: one pydantic-settings object read from `EZ_` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ConfigurationError, InvalidParameter
from engine.schedules import Schedule


class Settings(BaseSettings):
    """Every knob of ezstats; each field is set by the environment variable `EZ_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="EZ_", extra="ignore")

    data_dir: Path = Field(
        Path("./data"),
        description="Root of the lake and of the control-plane database (log_records/, ezstats.db).",
    )
    ingest_token: SecretStr | None = Field(
        None, description="Bearer token required by POST /v1/logs; unset means no auth (loopback only). "
        "Set but empty is a configuration error."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token required by /admin routes; unset means no auth (loopback only). "
        "Set but empty is a configuration error."
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
    scheduler_enabled: bool = Field(
        True, description="Run the job scheduler inside `ezstats serve` (else run `ezstats scheduler` on its own)."
    )
    schedule_rollups: str = Field("60", description="When the rollups job runs: seconds ('60') or cron ('* * * * *').")
    schedule_daily_stats: str = Field("5 0 * * *", description="When the daily stats job runs (UTC cron or seconds).")
    schedule_alert_detector: str = Field("60", description="When the alert detector runs (seconds or UTC cron).")
    schedule_log_cleaner: str = Field("30 0 * * *", description="When the log cleaner runs (UTC cron or seconds).")
    schedule_compaction: str = Field("15 * * * *", description="When partition compaction runs (UTC cron or seconds).")
    schedule_quota_reset: str = Field(
        "60", description="How often key quota periods are checked and advanced (seconds or UTC cron)."
    )
    job_runs_retention_days: int = Field(30, ge=1, description="Days of job run records kept.")
    lake_grace_seconds: int = Field(
        300, ge=0,
        description="How long a partition folder replaced by compaction or dropped by the log cleaner is kept "
        "(outside the table) before it is deleted, so a reader that listed it just before still reads it whole.",
    )
    compaction_target_rows: int = Field(
        1_048_576, gt=0,
        description="Rows per file compaction aims at; files under half of it count as small and get merged.",
    )
    stats_max_days: int = Field(
        400, ge=1, description="Most days a custom stats period (from..to) may span (else 422 limit-exceeded).",
    )
    stats_max_points: int = Field(
        100_000, ge=1, description="Most rows a stats series may answer: intervals x groups (else 422 "
        "limit-exceeded: ask interval=day, a shorter period or a filter).",
    )
    stats_max_groups: int = Field(
        10_000, ge=1, description="Most groups a /admin/stats answer may hold (else 422 limit-exceeded: ask a "
        "filter or a shorter period).",
    )
    stats_heavy_concurrency: int = Field(
        1, ge=1, description="Heavy stats requests (raw reads or hourly detail over more than a week) computed at "
        "once, each on one DuckDB thread; the others wait their turn, so light requests keep a core.",
    )
    max_errors_reported: int = Field(
        100, ge=1, description="Most row/field errors listed when a batch is refused."
    )
    alert_quota_refresh_seconds: int = Field(
        300,
        ge=0,
        description="The alert detector reuses key quota usage computed less than this long ago (0: every run); "
        "usage is summed from raw records, which costs seconds on a month of data.",
    )
    daily_stats_delay_seconds: int = Field(
        300, ge=0, description="How long after midnight UTC a day's stats wait for late batches (seed: 00:05)."
    )
    log_level: str = Field("INFO", description="Python logging level for the engine, API and CLI.")

    @field_validator("ingest_token", "admin_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would turn auth off while the operator believes it is on.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty: set a token, or unset the variable to run without auth on loopback")
        return value

    @field_validator("schedule_rollups", "schedule_daily_stats", "schedule_alert_detector", "schedule_log_cleaner",
                     "schedule_compaction", "schedule_quota_reset")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        try:
            Schedule.parse(value)  # a bad value stops the process at start, not the scheduler every tick
        except InvalidParameter as exc:
            raise ValueError(str(exc)) from None
        return value

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
    """The process-wide settings; tests call `get_settings.cache_clear()` or pass their own.

    Raises:
        ConfigurationError: an EZ_ variable is invalid; the message names each one.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"EZ_{'.'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from None
