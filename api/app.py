"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import metrics, problems
from api.correlation import RequestIdMiddleware
from api.routers import alerts, health, ingest, jobs, quotas, registry, stats
from engine import Engine, Settings


def create_app(settings: Settings | None = None, engine: Engine | None = None,
               scheduler: bool | None = None) -> FastAPI:
    """Build the app around one engine (a new one over `settings` when none is given).

    The job scheduler runs while the app is served when `scheduler` is true, or, when it is None,
    when `EZ_SCHEDULER_ENABLED` is (the default).
    """
    engine = engine or Engine(settings)
    run_scheduler = engine.settings.scheduler_enabled if scheduler is None else scheduler

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not run_scheduler:
            yield
            return
        from engine.scheduler import Scheduler

        app.state.scheduler = Scheduler(engine.jobs, engine.clock)
        app.state.scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(app.state.scheduler.stop)  # waits for running jobs

    app = FastAPI(
        title="ezstats",
        summary="Analytics for LLM API gateway traffic: ingest, stats, alerts.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.engine = engine
    problems.install(app)
    metrics.install(app)
    app.add_middleware(RequestIdMiddleware)
    # One router per resource; add new ones to this tuple.
    for module in (health, ingest, jobs, quotas, registry, stats, alerts):
        app.include_router(module.router)
    return app
