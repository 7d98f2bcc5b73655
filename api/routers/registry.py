"""/admin/registry: names and status of masters, keys, providers and provider keys."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from api.deps import AdminAuth, EngineDep
from api.schemas import RegistrySynced

router = APIRouter(prefix="/admin/registry", tags=["registry"], dependencies=[AdminAuth])

_EXAMPLE = {
    "masters": [{"master_id": 1, "name": "Acme"}],
    "keys": [{"key_id": 11, "master_id": 1, "name": "acme-prod"}],
    "providers": [{"provider_id": 3, "name": "OpenAI main", "provider_type": "openai",
                   "keys": [{"provider_key_id": 31, "name": "primary"}]}],
    "deleted": {"providers": [4]},
}


@router.get("")
def read_registry(engine: EngineDep) -> dict[str, list[dict[str, Any]]]:
    """The whole registry, section by section."""
    return engine.registry.read()


@router.put("", response_model=RegistrySynced, responses={422: {}})
def update_registry(
    engine: EngineDep,
    document: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
    replace: Annotated[bool, Query(description="Also delete entities of the given sections not listed.")] = False,
) -> RegistrySynced:
    """Upsert (and delete) masters, keys, providers and provider keys in bulk, in one transaction."""
    return RegistrySynced.model_validate(asdict(engine.registry.sync(document, replace)))
