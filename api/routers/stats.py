"""GET /admin/stats, /admin/stats/daily, /admin/stats/series: stats for dashboards and Grafana."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import AdminAuth, EngineDep
from api.etags import json_response
from api.schemas import Int64
from engine.stats import GROUP_BYS, INTERVALS, SERIES_METRICS, Filters
from engine.stats.answers import DailyStats, PeriodStats, SeriesStats
from engine.times import floor_hour

router = APIRouter(prefix="/admin/stats", tags=["stats"], dependencies=[AdminAuth])

Period = Annotated[str, Query(description="today, week, month, last7d, last30d, all or custom.")]
From = Annotated[dt.date | None, Query(alias="from", description="First day of a custom period (YYYY-MM-DD).")]
To = Annotated[dt.date | None, Query(alias="to", description="Last day of a custom period, included.")]
GroupBy = Annotated[str | None, Query(description=f"One of {', '.join(GROUP_BYS)}.")]
Source = Annotated[str, Query(description="auto (rollups + recent raw) or raw (exact percentiles, slower).")]
_CLOSED = "private, max-age=300"  # closed time changes only by late data, and the ETag catches that
_RESPONSES: dict[int | str, dict[str, object]] = {304: {}, 401: {}, 422: {}}
Id = Annotated[Int64 | None, Query()]


@router.get("", response_model=PeriodStats, responses=_RESPONSES)
def read_stats(
    request: Request, engine: EngineDep, period: Period = "today", first: From = None, last: To = None,
    master_id: Id = None, key_id: Id = None, model: str | None = None,
    provider_id: Id = None, provider_key_id: Id = None, group_by: GroupBy = None,
    source: Source = "auto",
) -> Response:
    """Stats of a period: SPEC metrics in total and per group, top models, latency percentiles."""
    filters = Filters(master_id, key_id, model, provider_id, provider_key_id)
    answer = engine.stats.read(period, first, last, filters, group_by, source)
    return json_response(request, answer, _cache(answer.end, engine.clock()))


@router.get("/daily", response_model=DailyStats, responses=_RESPONSES)
def read_daily_stats(
    request: Request, engine: EngineDep, first: From = None, last: To = None, master_id: Id = None,
) -> Response:
    """Immutable daily stats rows of closed days (gateway-wide, or one master's)."""
    return json_response(request, engine.stats.read_daily(first, last, master_id), "private, max-age=3600")


@router.get("/series", response_model=SeriesStats, responses=_RESPONSES)
def read_stats_series(
    request: Request, engine: EngineDep, period: Period = "today", first: From = None, last: To = None,
    interval: Annotated[str, Query(description=f"One of {', '.join(INTERVALS)}.")] = "hour",
    metric: Annotated[str, Query(description=f"One of {', '.join(SERIES_METRICS)}.")] = "requests",
    group_by: GroupBy = None, master_id: Id = None, key_id: Id = None, model: str | None = None,
    provider_id: Id = None, provider_key_id: Id = None, source: Source = "auto",
) -> Response:
    """One metric per hour or day (and group) as flat rows with ISO times, for Grafana's Infinity datasource."""
    filters = Filters(master_id, key_id, model, provider_id, provider_key_id)
    answer = engine.stats.series(period, interval, metric, group_by, first, last, filters, source)
    return json_response(request, answer, _cache(answer.end, engine.clock()))


def _cache(end: dt.datetime, now: dt.datetime) -> str:
    return _CLOSED if end <= floor_hour(now) else "no-cache"
