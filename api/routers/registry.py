"""/admin/registry: names and status of masters, keys, providers and provider keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from api.deps import AdminAuth, EngineDep
from engine.registry import Entities, SyncResult

router = APIRouter(prefix="/admin/registry", tags=["registry"], dependencies=[AdminAuth])

_EXAMPLE = {
    "masters": [{"master_id": 1, "name": "Acme"}],
    "keys": [{"key_id": 11, "master_id": 1, "name": "acme-prod"}],
    "providers": [{"provider_id": 3, "name": "OpenAI main", "provider_type": "openai",
                   "keys": [{"provider_key_id": 31, "name": "primary"}]}],
    "deleted": {"providers": [4]},
}


@router.get("")
def read_registry(engine: EngineDep) -> Entities:
    """The whole registry, section by section."""
    return engine.registry.read()


@router.put("", responses={422: {}})
def update_registry(
    engine: EngineDep,
    document: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
    replace: Annotated[bool, Query(description="Also delete entities of the given sections not listed.")] = False,
) -> SyncResult:
    """Upsert (and delete) masters, keys, providers and provider keys in bulk, in one transaction."""
    return engine.registry.sync(document, replace)
