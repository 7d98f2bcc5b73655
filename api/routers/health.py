"""GET /healthz."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter

from api.deps import EngineDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health(engine: EngineDep) -> Health:
    """Liveness: the process answers and its data dir is writable."""
    try:
        ver = version("ezstats")
    except PackageNotFoundError:
        ver = "dev"
    writable = engine.settings.data_dir.is_dir()
    return Health(status="ok" if writable else "degraded", data_dir=str(engine.settings.data_dir), version=ver)
