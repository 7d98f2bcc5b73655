"""The control-store schema: every table of `ezstats.db`, as numbered migrations applied on open.

A migration runs once per database, in order, inside one transaction that also records its number
(`PRAGMA user_version`, plus a row in `schema_migrations` for people). Released migrations never
change: a new column or table is a new migration at the end of `MIGRATIONS`.

Migration 1 is the schema of ezstats 0.1.0, whose modules created their own tables with
`CREATE TABLE IF NOT EXISTS`; written the same way, it upgrades such a database in place (its tables
are kept, with their rows, and those it lacks are created).

Each table has one owning module (named above its DDL): only that module reads or writes it; others
go through its methods.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One numbered step of the schema."""

    version: int
    name: str
    sql: str


INITIAL = """
-- owner: engine.lake (the ingest ledger)
CREATE TABLE IF NOT EXISTS ingest_batches (
    batch_id     TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('publishing', 'committed')),
    records      INTEGER NOT NULL,
    files        TEXT NOT NULL,   -- JSON list of [staged file name, path relative to the data dir]
    staging      TEXT NOT NULL,   -- the staging folder the files came from
    hours        TEXT NOT NULL,   -- JSON list of the UTC hours (ISO) the batch has records in
    created_at   TEXT NOT NULL,
    committed_at TEXT
);
-- owner: engine.partitions (partition drops)
CREATE TABLE IF NOT EXISTS log_partition_drops (
    date       TEXT PRIMARY KEY,  -- a UTC day whose raw log partition the cleaner dropped
    drops      INTEGER NOT NULL,  -- how many times: late records start a new partition that is dropped in turn
    dropped_at TEXT NOT NULL      -- the latest drop
);
-- owner: engine.stats.rollups
CREATE TABLE IF NOT EXISTS stats_watermarks (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL   -- ingest_batches rowid: every batch at or below it is in the rollups
);
CREATE TABLE IF NOT EXISTS rollup_hour_versions (
    hour    TEXT PRIMARY KEY,  -- ISO UTC hour
    version INTEGER NOT NULL   -- changes whenever the hour's rollup rows are recomputed (cache keys)
);
CREATE TABLE IF NOT EXISTS rollup_bases (
    date  TEXT PRIMARY KEY,  -- a day whose raw partition the log cleaner dropped
    drops INTEGER NOT NULL   -- the drop its rollups_base files were taken after (log_partition_drops.drops)
);
-- owner: engine.stats.daily
CREATE TABLE IF NOT EXISTS daily_stats_late (
    date          TEXT PRIMARY KEY,  -- a summarized day that received records after its stats were written
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    refreshes     INTEGER NOT NULL   -- how many rollup refreshes found new records for it
);
-- owner: engine.jobs
CREATE TABLE IF NOT EXISTS job_runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT NOT NULL,
    trigger     TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    due_at      TEXT,             -- the scheduled tick (ISO UTC), NULL for a manual run
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'failed', 'abandoned')),
    rows        INTEGER,
    message     TEXT,
    details     TEXT,             -- JSON
    error       TEXT,
    duration_ms REAL,
    owner       TEXT NOT NULL     -- host:pid:thread that ran it
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job, run_id);
CREATE TABLE IF NOT EXISTS job_ticks (
    job      TEXT PRIMARY KEY,
    last_due TEXT NOT NULL       -- ISO UTC of the last scheduled tick claimed
);
-- owner: engine.quotas
CREATE TABLE IF NOT EXISTS key_quotas (
    key_id        INTEGER PRIMARY KEY,
    quota_limit   INTEGER NOT NULL CHECK (quota_limit > 0),
    reset_period  TEXT NOT NULL CHECK (reset_period IN ('daily', 'weekly', 'monthly', 'never')),
    last_reset_at TEXT NOT NULL,  -- ISO UTC, usage counts quota_cost of records with created_at >= this
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quota_resets (
    key_id       INTEGER NOT NULL,
    period_start TEXT NOT NULL,   -- the new period's start (ISO UTC)
    previous     TEXT NOT NULL,   -- the closed period's start
    used         INTEGER NOT NULL, -- quota units used in the closed period
    reset_at     TEXT NOT NULL,   -- when the job ran
    PRIMARY KEY (key_id, period_start)
);
-- owner: engine.registry
CREATE TABLE IF NOT EXISTS registry_masters (
    master_id INTEGER PRIMARY KEY,
    name TEXT,
    status TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_keys (
    key_id INTEGER PRIMARY KEY,
    master_id INTEGER,
    name TEXT,
    status TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_providers (
    provider_id INTEGER PRIMARY KEY,
    name TEXT,
    provider_type TEXT,
    status TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_provider_keys (
    provider_key_id INTEGER PRIMARY KEY,
    provider_id INTEGER,
    name TEXT,
    status TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_deleted (
    kind       TEXT NOT NULL,    -- masters, keys, providers, provider_keys
    id         INTEGER NOT NULL,
    deleted_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
-- owner: engine.alerts.thresholds
CREATE TABLE IF NOT EXISTS alert_thresholds (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,      -- Thresholds as JSON
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
-- owner: engine.alerts.lifecycle (and engine.alerts.history reads them)
CREATE TABLE IF NOT EXISTS alerts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint        TEXT NOT NULL,
    series             TEXT NOT NULL,     -- fingerprint without the period
    type               TEXT NOT NULL,
    metric             TEXT NOT NULL,
    scope              TEXT NOT NULL CHECK (scope IN ('global', 'master', 'key', 'provider_key')),
    scope_id           INTEGER,
    master_id          INTEGER,
    key_id             INTEGER,
    provider_key_id    INTEGER,
    period             TEXT,              -- the UTC day or quota period of per-period alerts
    period_end         TEXT,
    status             TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    severity           TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    peak_severity      TEXT NOT NULL,
    value              REAL NOT NULL,
    peak_value         REAL NOT NULL,
    threshold          REAL NOT NULL,
    critical_threshold REAL NOT NULL,
    samples            INTEGER NOT NULL,
    window_start       TEXT NOT NULL,
    window_end         TEXT NOT NULL,
    details            TEXT NOT NULL,     -- JSON: the rule's extra figures (error count, quota limit, ...)
    recovery_streak    INTEGER NOT NULL DEFAULT 0,
    opened_at          TEXT NOT NULL,
    last_seen_at       TEXT NOT NULL,     -- last evaluation at or over the threshold
    evaluated_at       TEXT NOT NULL,     -- last evaluation that observed it
    acknowledged_at    TEXT,
    acknowledged_by    TEXT,
    ack_note           TEXT,
    ack_expires_at     TEXT,
    resolved_at        TEXT,
    resolved_by        TEXT,
    resolution         TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active ON alerts (fingerprint)
    WHERE status IN ('open', 'acknowledged');
CREATE INDEX IF NOT EXISTS alerts_by_fingerprint ON alerts (fingerprint, resolved_at);
CREATE INDEX IF NOT EXISTS alerts_by_opened ON alerts (opened_at, id);
CREATE TABLE IF NOT EXISTS alert_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    at       TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('opened', 'escalated', 'de-escalated', 'acknowledged',
                                           'ack_expired', 'resolved')),
    actor    TEXT NOT NULL,
    note     TEXT,
    severity TEXT,
    value    REAL
);
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id, id);
"""

CREDENTIALS = """
-- owner: engine.registry (why a provider key is disabled, e.g. by the token refresh)
ALTER TABLE registry_provider_keys ADD COLUMN reason TEXT;
-- owner: engine.credentials.store
CREATE TABLE credentials (
    provider_key_id INTEGER PRIMARY KEY,
    provider_type   TEXT NOT NULL CHECK (provider_type IN ('codex', 'claude-code', 'gemini-cli', 'antigravity')),
    access_token    BLOB NOT NULL,     -- every token is encrypted (engine.secretbox), never clear
    refresh_token   BLOB NOT NULL,
    id_token        BLOB,
    expires_at      TEXT NOT NULL,     -- of the access token
    account_id      TEXT,
    email           TEXT,
    status          TEXT NOT NULL CHECK (status IN ('active', 'refreshing', 'disabled')),
    reason          TEXT,              -- why it is disabled
    version         INTEGER NOT NULL,  -- +1 whenever the tokens change: the compare-and-swap of every store
    lease_owner     TEXT,              -- host:pid:thread refreshing it now (single flight across processes)
    lease_until     TEXT,
    inflight_owner  TEXT,              -- set while a refresh token is out at the provider: a crash leaves it
    inflight_at     TEXT,
    last_refresh_at TEXT,              -- last successful refresh
    last_attempt_at TEXT,
    last_outcome    TEXT,
    last_error      TEXT,
    failures        INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts
    next_attempt_at TEXT,              -- backoff: no attempt before this
    imported_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE TABLE credential_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_key_id INTEGER NOT NULL,
    provider_type   TEXT NOT NULL,
    at              TEXT NOT NULL,
    trigger         TEXT NOT NULL,     -- schedule, request, import, ...
    outcome         TEXT NOT NULL,     -- refreshed, retryable, rate_limited, disabled, superseded, interrupted, ...
    http_status     INTEGER,
    error           TEXT,
    duration_ms     REAL,
    expires_at      TEXT,              -- the new expiry after a refresh
    owner           TEXT NOT NULL
);
CREATE INDEX credential_attempts_by_key ON credential_attempts (provider_key_id, id);
CREATE TABLE credential_refresh_counts (
    provider_type TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    count         INTEGER NOT NULL,    -- monotonic: the /metrics counter, across processes and restarts
    PRIMARY KEY (provider_type, outcome)
);
CREATE TABLE credential_token_reads (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_key_id INTEGER NOT NULL,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,     -- who read the access token (the audit of GET .../token)
    version         INTEGER NOT NULL
);
-- owner: engine.credentials.queue
CREATE TABLE credential_refresh_requests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_key_id INTEGER NOT NULL,
    source          TEXT NOT NULL,     -- api, cli, redis
    requested_by    TEXT NOT NULL,
    requested_at    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    claimed_by      TEXT,
    claimed_until   TEXT,              -- a running request whose worker died is queued again after this
    finished_at     TEXT,
    outcome         TEXT,
    error           TEXT
);
CREATE INDEX credential_refresh_requests_by_state ON credential_refresh_requests (state, id);
"""

ALERT_PEAKS = """
-- owner: engine.alerts.lifecycle. value, samples, window_* and details describe the latest evaluation;
-- the peak (highest value while active) is kept apart with its own evaluation time, window, samples and
-- figures. Alerts stored before this migration have a peak only where it was the latest evaluation.
ALTER TABLE alerts ADD COLUMN peak_at TEXT;
ALTER TABLE alerts ADD COLUMN peak_window_start TEXT;
ALTER TABLE alerts ADD COLUMN peak_window_end TEXT;
ALTER TABLE alerts ADD COLUMN peak_samples INTEGER;
ALTER TABLE alerts ADD COLUMN peak_details TEXT;
UPDATE alerts SET peak_at = evaluated_at, peak_window_start = window_start, peak_window_end = window_end,
    peak_samples = samples, peak_details = details
WHERE value = peak_value;
"""

NOTIFICATIONS = """
-- owner: engine.notifications.channels
CREATE TABLE notification_channels (
    name                 TEXT PRIMARY KEY,
    type                 TEXT NOT NULL CHECK (type IN ('alertmanager', 'webhook', 'slack')),
    url                  TEXT NOT NULL,     -- a secret itself for slack (the incoming-webhook URL): masked in answers
    secret               TEXT,              -- webhook signing key / alertmanager bearer token: never answered
    min_severity         TEXT NOT NULL CHECK (min_severity IN ('warning', 'critical')),
    types                TEXT,              -- JSON list of alert types; NULL: every type
    scopes               TEXT,              -- JSON list of scope filters (`key`, `master:12`, ...); NULL: every scope
    min_interval_seconds INTEGER NOT NULL CHECK (min_interval_seconds >= 0),
    notify_acknowledged  INTEGER NOT NULL CHECK (notify_acknowledged IN (0, 1)),
    since_event_id       INTEGER NOT NULL,  -- the channel's events are the alert_events after this id
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
-- owner: engine.notifications.outbox (the durable outbox: which event goes to which channel, and how it went)
CREATE TABLE notification_cursor (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    event_id INTEGER NOT NULL   -- every alert_events row up to this id has been turned into deliveries
);
INSERT INTO notification_cursor (id, event_id) SELECT 1, coalesce(max(id), 0) FROM alert_events;
CREATE TABLE notification_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         INTEGER NOT NULL,   -- alert_events.id
    channel          TEXT NOT NULL,
    alert_id         INTEGER NOT NULL,
    kind             TEXT NOT NULL,      -- the event's kind (opened, escalated, ...)
    event_at         TEXT NOT NULL,
    severity         TEXT,               -- the event's severity and value
    value            REAL,
    shown_before     TEXT,               -- the severity the channel showed the alert at before this event (NULL: none)
    shown_after      TEXT,               -- and after it (NULL: not firing there)
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    finished_at      TEXT,               -- delivered, dead-lettered or cancelled
    last_status_code INTEGER,
    last_error       TEXT,
    UNIQUE (event_id, channel)           -- an event reaches a channel at most once, however many notifiers run
);
CREATE INDEX notification_deliveries_queue ON notification_deliveries (channel, status, event_id);
CREATE INDEX notification_deliveries_by_alert ON notification_deliveries (alert_id, channel, event_id);
CREATE INDEX notification_deliveries_by_status ON notification_deliveries (status, id);
CREATE TABLE notification_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER REFERENCES notification_deliveries (id),  -- NULL: an alertmanager re-send of open alerts
    channel     TEXT NOT NULL,
    at          TEXT NOT NULL,
    attempt     INTEGER NOT NULL,    -- 1 for the first try (again 1 after a re-drive)
    outcome     TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead', 'resent', 'resend_failed')),
    status_code INTEGER,
    latency_ms  REAL,
    error       TEXT
);
CREATE INDEX notification_attempts_by_delivery ON notification_attempts (delivery_id, id);
CREATE TABLE notification_channel_state (
    channel      TEXT PRIMARY KEY,
    lease_owner  TEXT,               -- the notifier sending to the channel now (host:pid:thread:token)
    lease_until  TEXT,
    last_sent_at TEXT,               -- the last message delivered (the channel's minimum interval counts from it)
    resend_at    TEXT                -- when open alerts are next re-sent (alertmanager)
);
CREATE TABLE notification_totals (
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,           -- delivered, failed (an attempt that will be retried), dead
    count   INTEGER NOT NULL,
    PRIMARY KEY (channel, outcome)
);
"""

PREVIEW_RUNS = """
-- owner: engine.alerts.previews (backtests run as jobs: queued, run one at a time per process, kept)
CREATE TABLE preview_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'abandoned')),
    span_start    TEXT NOT NULL,   -- the replayed minutes [span_start, span_end) (ISO UTC; the end is capped at
    span_end      TEXT NOT NULL,   --   the time of the request: a replay stops at now)
    thresholds    TEXT NOT NULL,   -- the thresholds replayed (the candidate, or those stored at the request), JSON
    minutes_done  INTEGER NOT NULL DEFAULT 0,
    minutes_total INTEGER NOT NULL,
    requested_at  TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    owner         TEXT,            -- host:pid:thread of the process running it
    result        TEXT,            -- the Preview (JSON) once done
    error         TEXT
);
CREATE INDEX preview_runs_by_status ON preview_runs (status, id);
"""

HARDENING = """
-- owner: engine.lake (the ingest ledger). An Idempotency-Key is bound to the body it first came with (IETF
-- Idempotency-Key draft): the same key with another body is refused. A replay answers the first receipt,
-- its counts included.
ALTER TABLE ingest_batches ADD COLUMN fingerprint TEXT;  -- sha256 hex of the (decompressed) body; NULL: no body
ALTER TABLE ingest_batches ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;  -- records dropped: request_id seen
ALTER TABLE ingest_batches ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;   -- error_messages cut to the limit
-- Client keys get a namespace of their own, apart from content hashes (`sha256:`) and internal ids (`demo:`),
-- so that a client cannot name another body's batch. Earlier client keys were stored as sent.
UPDATE ingest_batches SET batch_id = 'key:' || batch_id
WHERE batch_id NOT LIKE 'sha256:%' AND batch_id NOT LIKE 'demo:%' AND batch_id NOT LIKE 'key:%';
-- owner: engine.quarantine
CREATE TABLE IF NOT EXISTS quarantined_files (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name     TEXT NOT NULL,     -- the lake table the file was in (log_records, rollups_hourly, ...)
    date           TEXT NOT NULL,     -- its date partition
    path           TEXT NOT NULL,     -- where it was, relative to the data dir
    quarantined_as TEXT NOT NULL,     -- where it is now, relative to the data dir (under _quarantine/)
    reason         TEXT NOT NULL,
    rows           INTEGER,           -- records it held, when its footer still says; NULL: unknown
    hours          TEXT NOT NULL,     -- JSON list of the UTC hours (ISO) whose records it held
    quarantined_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantined_files_by_date ON quarantined_files (date);
"""

LEASES = """
-- owner: engine.leases (locks with an expiry shared by replicas on several hosts: jobs, the rollup writer)
CREATE TABLE IF NOT EXISTS leases (  -- IF NOT EXISTS: re-applied harmlessly after a rollback to an older version
    name        TEXT PRIMARY KEY,  -- what it guards (job:<name>, rollups)
    owner       TEXT NOT NULL,     -- host:pid:thread:token of the holder
    expires_at  TEXT NOT NULL,     -- ISO UTC; once past, any replica may take it over
    acquired_at TEXT NOT NULL,
    renewed_at  TEXT NOT NULL
);
"""

LAKE_MANIFEST = """
-- owner: engine.manifest. Which lake files are live on object storage (EZ_LAKE_URL s3://...), where there is
-- no rename: a batch's files are recorded here in the transaction that commits it, and compaction, the log
-- cleaner and derived-table rewrites swap rows here in one transaction. Readers read only live rows; a removed
-- file is deleted from the bucket once EZ_LAKE_GRACE_SECONDS have passed. Unused by a local lake.
CREATE TABLE IF NOT EXISTS lake_files (
    path       TEXT PRIMARY KEY,  -- key relative to the lake root: log_records/date=2026-01-15/part-....parquet
    table_name TEXT NOT NULL,     -- log_records, rollups_hourly, daily_stats, ...
    date       TEXT NOT NULL,     -- its date partition
    rows       INTEGER NOT NULL,
    origin     TEXT NOT NULL,     -- what added it: the ingest batch id, compaction, publish
    added_at   TEXT NOT NULL,
    removed_at TEXT,              -- NULL: live; else when a compaction, drop or rewrite took it out
    removed_by TEXT               -- compacted, dropped, replaced
);
CREATE INDEX IF NOT EXISTS lake_files_live ON lake_files (table_name, date) WHERE removed_at IS NULL;
CREATE INDEX IF NOT EXISTS lake_files_removed ON lake_files (removed_at) WHERE removed_at IS NOT NULL;
"""

LEDGER_PUBLISHING = """
-- owner: engine.lake. The ledger keeps every batch for ever (idempotency), and each group commit looks up its
-- own rows by staging folder: without an index each of those lookups read the whole ledger (a group of 16
-- small batches took 45 ms at 100,000 ledger rows, 312 ms at 1M, against 11 ms when empty). Partial: it holds
-- only the batches being published, a group's worth at a time, so it costs nothing as the ledger grows.
CREATE INDEX IF NOT EXISTS ingest_batches_publishing ON ingest_batches (staging) WHERE state = 'publishing';
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial: the schema of ezstats 0.1.0", INITIAL),
    Migration(2, "provider credentials: OAuth tokens, refresh history and queue", CREDENTIALS),
    Migration(3, "alerts: the peak apart from the latest evaluation", ALERT_PEAKS),
    Migration(4, "alert notifications: channels and the delivery outbox", NOTIFICATIONS),
    Migration(5, "preview_runs: threshold backtests as queued jobs", PREVIEW_RUNS),
    Migration(6, "hardening: idempotency fingerprints and receipt counts, quarantined lake files", HARDENING),
    Migration(7, "leases: job and rollup locks shared by replicas on several hosts", LEASES),
    Migration(8, "lake_files: the manifest of live files on object storage", LAKE_MANIFEST),
    Migration(9, "ingest ledger: the batches being published, indexed by staging folder", LEDGER_PUBLISHING),
)

#: The version a database has once every migration is applied.
LATEST = MIGRATIONS[-1].version
