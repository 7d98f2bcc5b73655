"""GET /healthz."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter

from api.deps import EngineDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health(engine: EngineDep) -> Health:
    """Liveness: the process answers and its data dir exists."""
    try:
        ver = version("ezstats")
    except PackageNotFoundError:
        ver = "dev"
    present = engine.settings.data_dir.is_dir()
    return Health(status="ok" if present else "degraded", version=ver)
