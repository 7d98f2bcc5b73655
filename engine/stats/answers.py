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
    """The metrics of one group: `group` is its id, model name, local day (YYYY-MM-DD) or hour (the UTC
    instant it starts); `name` the registry's display name of an id, else null."""

    group: int | str | None
    name: str | None = Field(None, description="The registry's display name of the master, key, provider or "
                             "provider key; null when it has none or the group is not an id.")


class Other(Metrics):
    """The groups a `limit` left out, summed: exact counts, distinct counts and percentiles of their records."""

    groups: int = Field(description="How many groups it sums.")


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
    tz: str = Field(description="The IANA zone whose days and hours the period and its day/hour groups follow.")
    start: dt.datetime = Field(description="The period's first instant (its local midnight for day periods).")
    end: dt.datetime = Field(description="The instant the period ends, excluded (now for open periods).")
    filters: dict[str, int | str]
    group_by: str | None
    sort: str | None = Field(description="The metric groups are sorted by ('-' first: descending); null: time "
                             "groups in time order, others by requests, most first.")
    limit: int | None = Field(description="How many groups are listed at most; null: all.")
    totals: Metrics = Field(description="Every record of the period, whatever the limit.")
    groups: list[Group]
    groups_total: int = Field(description="How many groups there are before the limit.")
    other: Other | None = Field(description="The groups past the limit summed (with other=true), else null.")
    top_models: list[TopModel]
    percentiles: PercentileMode = Field(description="'exact' (from raw records), 'approx' (merged histograms, "
                                        "within 1 %), or 'unavailable' (a two-dimension question over days whose "
                                        "raw records retention dropped).")
    sources: Sources


class SeriesStats(_Answer):
    """One metric per interval (and group) as flat rows with ISO `time`, as Grafana's Infinity datasource reads them."""

    period: str
    tz: str = Field(description="The IANA zone whose days and hours the intervals follow.")
    start: dt.datetime
    end: dt.datetime
    interval: str
    metric: str
    group_by: str | None
    sort: str | None = Field(description="How the listed groups were chosen over the whole period (with limit).")
    limit: int | None = Field(description="How many groups are listed at most; null: all.")
    filters: dict[str, int | str]
    percentiles: PercentileMode = Field(description="How latency percentiles were computed; 'none' for other "
                                        "metrics.")
    rows: list[dict[str, int | float | str | bool | None]] = Field(
        description="{time, group?, name?, other?, <metric>}: `time` is the UTC instant the interval (a local day "
        "or hour) starts; with group_by, `group` is the group's id and `name` its registry name (null if none); "
        "with other=true, `other` marks the row summing the groups past the limit (group null, name 'other'). "
        "Intervals without records are present (counts 0, rates and latencies null).")


class DailyTopModel(TopModel):
    """A model of a day's top list."""


class DailyStat(_Answer):
    """One immutable daily stats row (seed DailyStat) at one grain; `date` is a UTC day."""

    date: dt.date
    grain: str
    group: int | str | None = Field(description="The row's id at its grain (master, key, provider or provider key "
                                    "id, model name); null for the gateway row.")
    name: str | None = Field(description="The registry's display name of that id, or null.")
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
    """Stored daily stats of a range of UTC days (they are always UTC days, whatever `tz`)."""

    start: dt.date
    end: dt.date
    tz: str = Field(description="The zone whose today bounded the default range; the rows are UTC days.")
    grain: str = Field(description="gateway, master, key, model, provider or provider_key.")
    filters: dict[str, int | str]
    master_id: int | None = Field(description="The master_id filter (kept for older clients; see filters).")
    days: list[DailyStat]
