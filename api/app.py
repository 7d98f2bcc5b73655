"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api import metrics, problems
from api.routers import health, ingest, stats
from engine import Engine, Settings


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app around one engine (a new one over `settings` when none is given)."""
    engine = engine or Engine(settings)
    app = FastAPI(
        title="ezstats",
        summary="Analytics for LLM API gateway traffic: ingest, stats, alerts.",
        version="0.1.0",
    )
    app.state.engine = engine
    problems.install(app)
    metrics.install(app)
    # One router per resource; add new ones to this tuple.
    for module in (health, ingest, stats):
        app.include_router(module.router)
    return app
