"""What stats reads answer: typed, so the API schema, the CLI and the engine cannot drift apart."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: How an answer's latency percentiles were computed.
PercentileMode = Literal["exact", "approx", "unavailable", "none"]


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class Latency(_Answer):
    """Request latency in ms; percentiles are exact or within 1 % (see the answer's `percentiles`)."""

    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: int | None


class Ttft(_Answer):
    """Time to first token of streamed requests, in ms."""

    count: int
    avg: float | None
    max: int | None


class Metrics(_Answer):
    """The SPEC metrics of a set of records: exact counts, sums and distinct counts."""

    requests: int
    successes: int = Field(description="Requests with status_code < 400.")
    errors: int = Field(description="Requests with status_code >= 400, 429 excluded.")
    rate_limited: int = Field(description="Requests answered 429.")
    provider_failures: int = Field(description="Routed requests (provider_key_id set) with status_code >= 500.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    quota_cost: int
    masters: int = Field(description="Distinct masters.")
    keys: int = Field(description="Distinct keys.")
    streams: int
    error_rate: float | None = Field(description="errors / requests; null without requests.")
    latency_ms: Latency
    ttft_ms: Ttft


class Group(Metrics):
    """The metrics of one group; `group` is the id, model name, day or hour (ISO) grouped by."""

    group: int | str | None


class TopModel(_Answer):
    """A model by its request count."""

    model: str
    requests: int
    total_tokens: int


class Sources(_Answer):
    """Where an answer was read from."""

    rollup_hours: int = Field(description="Whole hours answered from the hourly (or daily) rollups.")
    raw_hours: int = Field(description="Hours (the last possibly partial) answered from raw records.")
    daily_days: int = Field(description="Whole days answered from the daily rollup tier.")
    lost_hours: list[dt.datetime] = Field(
        default_factory=list, description="Hours of the period that lost records: a lake file holding some of "
        "them could not be read and was moved to quarantine (`ezstats lake check --repair`). Their figures "
        "count only the records that remain.")


class PeriodStats(_Answer):
    """Stats of a period `[start, end)`: totals, groups and top models."""

    period: str
    start: dt.datetime
    end: dt.datetime
    filters: dict[str, int | str]
    group_by: str | None
    totals: Metrics
    groups: list[Group]
    top_models: list[TopModel]
    percentiles: PercentileMode = Field(description="'exact' (from raw records), 'approx' (merged histograms, "
                                        "within 1 %), or 'unavailable' (a two-dimension question over days whose "
                                        "raw records retention dropped).")
    sources: Sources


class SeriesStats(_Answer):
    """One metric per interval (and group) as flat rows with ISO `time`, as Grafana's Infinity datasource reads them."""

    period: str
    start: dt.datetime
    end: dt.datetime
    interval: str
    metric: str
    group_by: str | None
    filters: dict[str, int | str]
    percentiles: PercentileMode = Field(description="How latency percentiles were computed; 'none' for other "
                                        "metrics.")
    rows: list[dict[str, int | float | str | None]] = Field(
        description="{time, <group_by>?, <metric>}; intervals without records are present (counts 0, rates and "
        "latencies null).")


class DailyTopModel(TopModel):
    """A model of a day's top list."""


class DailyStat(_Answer):
    """One immutable daily stats row (seed DailyStat) at one grain."""

    date: dt.date
    grain: str
    master_id: int | None
    key_id: int | None = None
    model: str | None = None
    provider_id: int | None = None
    provider_key_id: int | None = None
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


class DailyStats(_Answer):
    """Stored daily stats of a day range."""

    start: dt.date
    end: dt.date
    master_id: int | None
    days: list[DailyStat]
