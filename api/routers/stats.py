"""GET /admin/stats, /admin/stats/daily, /admin/stats/series: stats for dashboards and Grafana."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import AdminAuth, EngineDep
from api.etags import json_response
from api.schemas import DailyStats, StatsRead, StatsSeries
from engine.stats import GROUP_BYS, INTERVALS, SERIES_METRICS, Filters

router = APIRouter(prefix="/admin/stats", tags=["stats"], dependencies=[AdminAuth])

Period = Annotated[str, Query(description="today, week, month, last7d, last30d, all or custom.")]
From = Annotated[dt.date | None, Query(alias="from", description="First day of a custom period (YYYY-MM-DD).")]
To = Annotated[dt.date | None, Query(alias="to", description="Last day of a custom period, included.")]
GroupBy = Annotated[str | None, Query(description=f"One of {', '.join(GROUP_BYS)}.")]
Source = Annotated[str, Query(description="auto (rollups + recent raw) or raw (exact percentiles, slower).")]
_CLOSED = "private, max-age=300"  # closed time changes only by late data, and the ETag catches that


def _filters(master_id: int | None, key_id: int | None, model: str | None, provider_id: int | None,
             provider_key_id: int | None) -> Filters:
    return Filters(master_id, key_id, model, provider_id, provider_key_id)



@router.get("", response_model=StatsRead, responses={304: {}, 422: {}})
async def read_stats(
    request: Request, engine: EngineDep, period: Period = "today", first: From = None, last: To = None,
    master_id: int | None = None, key_id: int | None = None, model: str | None = None,
    provider_id: int | None = None, provider_key_id: int | None = None, group_by: GroupBy = None,
    source: Source = "auto",
) -> Response:
    """Stats of a period: SPEC metrics in total and per group, top models, latency percentiles."""
    filters = _filters(master_id, key_id, model, provider_id, provider_key_id)
    result = await run_in_threadpool(engine.stats.read, period, first, last, filters, group_by, source)
    return json_response(request, StatsRead.model_validate(result), _cache(result["end"], engine.clock()))


@router.get("/daily", response_model=DailyStats, responses={304: {}, 422: {}})
async def read_daily_stats(
    request: Request, engine: EngineDep, first: From = None, last: To = None, master_id: int | None = None,
) -> Response:
    """Immutable daily stats rows of closed days (gateway-wide, or one master's)."""
    result = await run_in_threadpool(engine.stats.read_daily, first, last, master_id)
    return json_response(request, DailyStats.model_validate(result), "private, max-age=3600")


@router.get("/series", response_model=StatsSeries, responses={304: {}, 422: {}})
async def read_stats_series(
    request: Request, engine: EngineDep, period: Period = "today", first: From = None, last: To = None,
    interval: Annotated[str, Query(description=f"One of {', '.join(INTERVALS)}.")] = "hour",
    metric: Annotated[str, Query(description=f"One of {', '.join(SERIES_METRICS)}.")] = "requests",
    group_by: GroupBy = None, master_id: int | None = None, key_id: int | None = None, model: str | None = None,
    provider_id: int | None = None, provider_key_id: int | None = None, source: Source = "auto",
) -> Response:
    """One metric per hour or day (and group) as flat rows with ISO times, for Grafana's Infinity datasource."""
    filters = _filters(master_id, key_id, model, provider_id, provider_key_id)
    result = await run_in_threadpool(engine.stats.series, period, interval, metric, group_by, first, last,
                                     filters, source)
    return json_response(request, StatsSeries.model_validate(result), _cache(result["end"], engine.clock()))


def _cache(end: dt.datetime, now: dt.datetime) -> str:
    return _CLOSED if end <= now.replace(minute=0, second=0, microsecond=0) else "no-cache"
