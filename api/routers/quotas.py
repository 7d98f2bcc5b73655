"""/admin/keys/{key_id}/quota, /usage and /admin/quotas: key quotas and their usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import AdminAuth, EngineDep
from api.schemas import QuotaIn, QuotaPublic, QuotaUsagePublic
from engine.quotas import QuotaUsage

router = APIRouter(prefix="/admin", tags=["quotas"], dependencies=[AdminAuth])


@router.get("/keys/{key_id}/quota", response_model=QuotaPublic, responses={404: {}})
def read_quota(engine: EngineDep, key_id: int) -> QuotaPublic:
    """A key's quota: limit, reset period and last reset."""
    return QuotaPublic.model_validate(engine.quotas.get(key_id), from_attributes=True)


@router.put("/keys/{key_id}/quota", response_model=QuotaPublic)
def update_quota(engine: EngineDep, key_id: int, body: QuotaIn) -> QuotaPublic:
    """Set a key's quota (creates or replaces it)."""
    quota = engine.quotas.put(key_id, body.quota_limit, body.reset_period, body.last_reset_at)
    return QuotaPublic.model_validate(quota, from_attributes=True)


@router.delete("/keys/{key_id}/quota", status_code=204, responses={404: {}})
def delete_quota(engine: EngineDep, key_id: int) -> None:
    """Remove a key's quota; its history stays in the lake."""
    engine.quotas.delete(key_id)


@router.get("/keys/{key_id}/usage", response_model=QuotaUsagePublic, responses={404: {}})
async def read_key_usage(engine: EngineDep, key_id: int) -> QuotaUsagePublic:
    """A key's quota usage in its current period, exact, from the log records."""
    usage = await run_in_threadpool(engine.quotas.key_usage, key_id, engine.clock())
    return _public(usage)


@router.get("/quotas", response_model=list[QuotaUsagePublic])
async def read_quotas(engine: EngineDep,
                      over: Annotated[float, Query(ge=0, description="Only keys at or over this share of their "
                                                   "quota, e.g. 0.9.")] = 0.0) -> list[QuotaUsagePublic]:
    """Keys near or over their quota, highest share first."""
    usages = await run_in_threadpool(engine.quotas.over, over, engine.clock())
    return [_public(u) for u in usages]


def _public(usage: QuotaUsage) -> QuotaUsagePublic:
    return QuotaUsagePublic(key_id=usage.key_id, key_name=usage.key_name, quota_limit=usage.quota_limit,
                            used=usage.used,
                            remaining=max(usage.quota_limit - usage.used, 0), ratio=usage.ratio,
                            period_start=usage.period_start, period_end=usage.period_end)
