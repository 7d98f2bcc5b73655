"""Response models of the API, kept apart from engine types."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


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
