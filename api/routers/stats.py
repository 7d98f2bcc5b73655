"""GET /admin/stats, /admin/stats/daily, /admin/stats/series: stats for dashboards and Grafana."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import AdminAuth, EngineDep
from api.etags import json_response
from api.schemas import Int64
from engine.stats import GRAINS, GROUP_BYS, INTERVALS, SERIES_METRICS, Filters, TopN
from engine.stats.answers import DailyStats, PeriodStats, SeriesStats
from engine.times import floor_hour

router = APIRouter(prefix="/admin/stats", tags=["stats"], dependencies=[AdminAuth])

Period = Annotated[str, Query(description="today, week, month, last7d, last30d, all or custom (days of `tz`).")]
From = Annotated[dt.date | None, Query(alias="from", description="First day of a custom period (YYYY-MM-DD).")]
To = Annotated[dt.date | None, Query(alias="to", description="Last day of a custom period, included.")]
GroupBy = Annotated[str | None, Query(description=f"One of {', '.join(GROUP_BYS)} (day and hour: local to `tz`).")]
Source = Annotated[str, Query(description="auto (rollups + recent raw) or raw (exact percentiles, slower).")]
Tz = Annotated[str | None, Query(description="IANA time zone of the period's days and of day/hour groups, e.g. "
                                 "Asia/Shanghai (DST included); default EZ_DEFAULT_TZ (UTC).")]
# Filters on a record's ids (every stats route takes the same ones).
MasterId = Annotated[Int64 | None, Query(description="Only this master.")]
KeyId = Annotated[Int64 | None, Query(description="Only this key.")]
Model = Annotated[str | None, Query(description="Only this model.")]
ProviderId = Annotated[Int64 | None, Query(description="Only this provider.")]
ProviderKeyId = Annotated[Int64 | None, Query(description="Only this provider key.")]
# Top-N of groups.
Limit = Annotated[int | None, Query(ge=1, description="List at most this many groups (totals still count all).")]
Sort = Annotated[str | None, Query(description="Sort groups by a metric (requests, errors, error_rate, latency_p95, "
                                   "..., or group), ascending; '-' first for descending, e.g. -errors.")]
Other = Annotated[bool, Query(description="Add a row summing the groups past `limit`.")]
_CLOSED = "private, max-age=300"  # closed time changes only by late data, and the ETag catches that
_RESPONSES: dict[int | str, dict[str, object]] = {304: {}, 401: {}, 422: {}}


@router.get("", response_model=PeriodStats, responses=_RESPONSES)
def read_stats(
    request: Request, engine: EngineDep, period: Period = "today", first: From = None, last: To = None,
    master_id: MasterId = None, key_id: KeyId = None, model: Model = None, provider_id: ProviderId = None,
    provider_key_id: ProviderKeyId = None, group_by: GroupBy = None, source: Source = "auto", tz: Tz = None,
    limit: Limit = None, sort: Sort = None, other: Other = False,
) -> Response:
    """Stats of a period: SPEC metrics in total and per group (with names), top models, latency percentiles."""
    filters = Filters(master_id, key_id, model, provider_id, provider_key_id)
    answer = engine.stats.read(period, first, last, filters, group_by, source, tz, TopN(limit, sort, other))
    return json_response(request, answer, _cache(answer.end, engine.clock()))


@router.get("/daily", response_model=DailyStats, responses=_RESPONSES)
def read_daily_stats(
    request: Request, engine: EngineDep, first: From = None, last: To = None,
    grain: Annotated[str | None, Query(description=f"One of {', '.join(GRAINS)}; default: the grain of the one "
                                       "id filter given, else gateway.")] = None,
    master_id: MasterId = None, key_id: KeyId = None, model: Model = None, provider_id: ProviderId = None,
    provider_key_id: ProviderKeyId = None, tz: Tz = None,
) -> Response:
    """Immutable daily stats rows of closed UTC days at any grain (tz only sets the default range's today)."""
    filters = Filters(master_id, key_id, model, provider_id, provider_key_id)
    answer = engine.stats.read_daily(first, last, grain=grain, filters=filters, tz=tz)
    return json_response(request, answer, "private, max-age=3600")


@router.get("/series", response_model=SeriesStats, responses=_RESPONSES)
def read_stats_series(
    request: Request, engine: EngineDep, period: Period = "today", first: From = None, last: To = None,
    interval: Annotated[str, Query(description=f"One of {', '.join(INTERVALS)} (local to `tz`).")] = "hour",
    metric: Annotated[str, Query(description=f"One of {', '.join(SERIES_METRICS)}.")] = "requests",
    group_by: GroupBy = None, master_id: MasterId = None, key_id: KeyId = None, model: Model = None,
    provider_id: ProviderId = None, provider_key_id: ProviderKeyId = None, source: Source = "auto", tz: Tz = None,
    limit: Limit = None, sort: Sort = None, other: Other = False,
) -> Response:
    """One metric per local hour or day (and group) as flat rows with UTC times, for Grafana's Infinity datasource.

    With `limit`, the groups are the top ones over the whole period (by `sort`, default the metric, descending).
    """
    filters = Filters(master_id, key_id, model, provider_id, provider_key_id)
    answer = engine.stats.series(period, interval, metric, group_by, first, last, filters, source, tz,
                                 TopN(limit, sort, other))
    return json_response(request, answer, _cache(answer.end, engine.clock()))


def _cache(end: dt.datetime, now: dt.datetime) -> str:
    return _CLOSED if end <= floor_hour(now) else "no-cache"
