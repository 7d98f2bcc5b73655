"""/admin/keys/{key_id}/quota, /usage and /admin/quotas: key quotas and their usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminAuth, EngineDep
from api.schemas import Int64, QuotaBody
from engine.quotas import KeyQuota, QuotaUsage

router = APIRouter(prefix="/admin", tags=["quotas"], dependencies=[AdminAuth])


@router.get("/keys/{key_id}/quota", responses={404: {}})
def read_quota(engine: EngineDep, key_id: Int64) -> KeyQuota:
    """A key's quota: limit, reset period and last reset."""
    return engine.quotas.get(key_id)


@router.put("/keys/{key_id}/quota", responses={422: {}, 507: {}})
def update_quota(engine: EngineDep, key_id: Int64, body: QuotaBody) -> KeyQuota:
    """Set a key's quota (creates or replaces it)."""
    return engine.quotas.put(key_id, body.quota_limit, body.reset_period, body.last_reset_at)


@router.delete("/keys/{key_id}/quota", status_code=204, responses={404: {}})
def delete_quota(engine: EngineDep, key_id: Int64) -> None:
    """Remove a key's quota; its history stays in the lake."""
    engine.quotas.delete(key_id)


@router.get("/keys/{key_id}/usage", responses={404: {}})
def read_key_usage(engine: EngineDep, key_id: Int64) -> QuotaUsage:
    """A key's quota usage in its current period, exact, from the log records."""
    return engine.quotas.key_usage(key_id, engine.clock())


@router.get("/quotas")
def read_quotas(engine: EngineDep,
                over: Annotated[float, Query(ge=0, description="Only keys at or over this share of their "
                                             "quota, e.g. 0.9.")] = 0.0) -> list[QuotaUsage]:
    """Keys near or over their quota, highest share first."""
    return engine.quotas.over(over, engine.clock())
