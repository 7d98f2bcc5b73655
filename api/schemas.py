"""Response models of the API, kept apart from engine types."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.alerts.thresholds import Thresholds


class BatchAccepted(BaseModel):
    """A stored batch: the answer is the same when the batch is sent again."""

    batch_id: str = Field(description="The Idempotency-Key sent, or sha256 of the body.")
    records: int = Field(description="How many records the batch stored.")
    files: list[str] = Field(description="Parquet files the batch was published as, relative to the data dir.")


class Health(BaseModel):
    """Liveness and where the data is."""

    status: str
    data_dir: str
    version: str


class LatencyStats(BaseModel):
    """Request latency in ms; percentiles are exact or within 1 % (see `percentiles`)."""

    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: int | None


class TtftStats(BaseModel):
    """Time to first token of streamed requests, in ms."""

    count: int
    avg: float | None
    max: int | None


class StatsMetrics(BaseModel):
    """SPEC metrics of a set of records: exact counts, sums and distinct counts."""

    requests: int
    successes: int
    errors: int
    rate_limited: int
    provider_failures: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    quota_cost: int
    masters: int = Field(description="Distinct masters.")
    keys: int = Field(description="Distinct keys.")
    streams: int
    error_rate: float | None = Field(description="errors / requests; null without requests.")
    latency_ms: LatencyStats
    ttft_ms: TtftStats


class StatsGroup(StatsMetrics):
    """The metrics of one group; `group` is the id, model name, day or hour (ISO) grouped by."""

    group: int | str | None


class TopModel(BaseModel):
    """A model by its request count."""

    model: str
    requests: int
    total_tokens: int


class StatsSources(BaseModel):
    """Where the answer was read from: whole hours of rollups, hours (some partial) of raw records."""

    rollup_hours: int
    raw_hours: int


class StatsRead(BaseModel):
    """Stats of a period `[start, end)`."""

    period: str
    start: dt.datetime
    end: dt.datetime
    filters: dict[str, int | str]
    group_by: str | None
    totals: StatsMetrics
    groups: list[StatsGroup]
    top_models: list[TopModel]
    percentiles: str = Field(description="'exact' (computed from raw records) or 'approx' (within 1 %).")
    sources: StatsSources


class StatsSeries(BaseModel):
    """One metric per interval (and group), flat rows with ISO `time`: Grafana Infinity reads them as is."""

    period: str
    start: dt.datetime
    end: dt.datetime
    interval: str
    metric: str
    group_by: str | None
    filters: dict[str, int | str]
    percentiles: str
    rows: list[dict[str, int | float | str | None]]


class DailyTopModel(TopModel):
    """A model of a day's top list."""


class DailyStat(BaseModel):
    """One immutable daily stats row (seed DailyStat)."""

    date: dt.date
    grain: str
    master_id: int | None
    requests: int
    successes: int
    errors: int
    rate_limited: int
    provider_failures: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    quota_cost: int
    masters: int
    keys: int
    streams: int
    latency_avg: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    latency_max: int | None
    ttft_avg: float | None
    ttft_p95: float | None
    ttft_max: int | None
    top_models: list[DailyTopModel]
    late_data: bool = Field(description="Records arrived after the row was written; `ezstats backfill` fixes it.")


class DailyStats(BaseModel):
    """Stored daily stats of a day range."""

    start: dt.date
    end: dt.date
    master_id: int | None
    days: list[DailyStat]


class JobRunPublic(BaseModel):
    """One run of a job."""

    run_id: int
    job: str
    trigger: str = Field(description="`schedule` or `manual`.")
    due_at: dt.datetime | None = Field(description="The scheduled tick it ran for (null when run by hand).")
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str = Field(description="`running`, `ok`, `failed` or `abandoned` (its process stopped).")
    rows: int | None = Field(description="Rows the run touched.")
    message: str | None
    details: dict[str, Any]
    error: str | None
    duration_ms: float | None


class JobPublic(BaseModel):
    """A scheduled job: when it runs, how it last went, when it runs next."""

    name: str
    description: str
    schedule: str = Field(description="Seconds between runs, or a UTC cron expression.")
    last_run: JobRunPublic | None
    next_run_at: dt.datetime = Field(description="The next tick; a past time means it is due now.")


class QuotaIn(BaseModel):
    """A key's quota as set by an admin."""

    quota_limit: int = Field(gt=0, description="Quota units allowed per period (compared with sum(quota_cost)).")
    reset_period: Literal["daily", "weekly", "monthly", "never"]
    last_reset_at: dt.datetime | None = Field(
        None, description="A manual reset: start of the current period. Default: the calendar period's start "
        "(for never: all retained history)."
    )


class QuotaPublic(BaseModel):
    """A key's quota."""

    key_id: int
    quota_limit: int
    reset_period: str
    last_reset_at: dt.datetime
    updated_at: dt.datetime


class QuotaUsagePublic(BaseModel):
    """A key's usage in its current quota period."""

    key_id: int
    key_name: str | None = Field(description="The key's name in the registry, if it has one.")
    quota_limit: int
    used: int = Field(description="Exact sum of quota_cost since period_start.")
    remaining: int
    ratio: float = Field(description="used / quota_limit.")
    period_start: dt.datetime
    period_end: dt.datetime | None = Field(description="The next reset; null for `never`.")


class RegistrySynced(BaseModel):
    """What a registry sync changed, per section."""

    upserted: dict[str, int]
    deleted: dict[str, int]


# -- alerts ---------------------------------------------------------------------------------------

AlertType = Literal["rate_limit", "error_spike", "quota_exceeded", "provider_down", "traffic_spike"]
Severity = Literal["info", "warning", "critical"]
AlertStatus = Literal["open", "acknowledged", "resolved"]


class AlertEventOut(BaseModel):
    """One entry of an alert's append-only history."""

    id: int
    at: str = Field(description="When (RFC 3339, UTC).")
    kind: Literal["opened", "escalated", "de-escalated", "acknowledged", "ack_expired", "resolved"]
    actor: str = Field(description="`detector` or who acted through the API/CLI.")
    note: str | None = Field(description="Why: the observation, the ack note or the resolution.")
    severity: Severity | None
    value: float | None


class AlertOut(BaseModel):
    """An alert: what was measured where, against which threshold, and where it is in its lifecycle."""

    id: int
    fingerprint: str = Field(description="type:metric:scope:id[:period]; one active alert per fingerprint.")
    type: AlertType
    metric: str = Field(description="e.g. error_rate, rate_limited_share, failure_rate, master_rpm, global_qps.")
    scope: Literal["global", "master", "key", "provider_key"]
    scope_id: int | None
    master_id: int | None
    key_id: int | None
    provider_key_id: int | None
    period: str | None = Field(description="The UTC day (per-day checks) or quota period start.")
    status: AlertStatus
    severity: Severity = Field(description="Current severity (escalates and de-escalates in place).")
    peak_severity: Severity
    value: float = Field(description="Last observed value of the metric.")
    peak_value: float
    threshold: float = Field(description="Warning level of the metric.")
    critical_threshold: float
    samples: int = Field(description="Requests behind the last observation (used units for quotas).")
    window_start: str
    window_end: str
    details: dict[str, float] = Field(description="The rule's own figures (errors, rate_limited, quota_limit...).")
    opened_at: str
    last_seen_at: str = Field(description="Last evaluation at or over the threshold.")
    evaluated_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    ack_note: str | None
    ack_expires_at: str | None
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None
    events: list[AlertEventOut] = Field(description="History, oldest first (GET /admin/alerts/{id} only).")


class AlertPageOut(BaseModel):
    """A page of alerts, newest first."""

    alerts: list[AlertOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class AlertStatsOut(BaseModel):
    """Alerts opened in [start, end) counted three ways."""

    start: str
    end: str
    total: int
    by_type: dict[str, int]
    by_severity: dict[str, int] = Field(description="By peak severity.")
    by_status: dict[str, int]


class AckIn(BaseModel):
    """Acknowledge an alert."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field("admin", max_length=200, description="Who acknowledges.")
    note: str | None = Field(None, max_length=2000)
    expires_at: dt.datetime | None = Field(None, description="The alert re-opens at this instant (RFC 3339).")


class ResolveIn(BaseModel):
    """Resolve an alert by hand."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field("admin", max_length=200, description="Who resolves.")
    note: str | None = Field(None, max_length=2000, description="Why.")


class ThresholdsOut(BaseModel):
    """The alert thresholds in force; `version` is also the ETag to send back as If-Match."""

    version: int
    updated_at: str
    updated_by: str
    thresholds: Thresholds


class PreviewIn(BaseModel):
    """A backtest request: candidate thresholds (default: the stored ones) over a range of UTC days."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_day: dt.date = Field(alias="from", description="First UTC day replayed (YYYY-MM-DD).")
    to_day: dt.date = Field(alias="to", description="Last UTC day replayed, included (at most 31 days).")
    thresholds: Thresholds | None = Field(None, description="Candidate thresholds; null replays the stored ones.")


class PreviewOut(BaseModel):
    """What the candidate thresholds would have opened and resolved; stored alerts are untouched."""

    start: str
    end: str
    evaluations: int = Field(description="Minutes replayed.")
    opened: int
    resolved: int
    by_type: dict[str, int]
    by_severity: dict[str, int]
    thresholds: Thresholds
    alerts: list[AlertOut]
