"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from api import docs, metrics, problems
from api.correlation import RequestIdMiddleware
from api.routers import alerts, console, credentials, health, ingest, jobs, notifications, quotas, registry, stats
from api.strict import reject_unknown_query
from engine import Engine, Settings

#: What a browser may send and read cross-origin (EZ_CORS_ORIGINS).
_CORS_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key"]
_CORS_EXPOSED = ["ETag", "Idempotent-Replayed", "Location"]


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
        # What is built by now (modules, the app, the engine) lives as long as the app is served: frozen out of
        # the collector's sight, a full collection no longer walks ~140k objects (80 ms here) inside a request.
        # Thawed when serving ends, so that an app made and dropped (tests) leaves nothing uncollectable.
        gc.freeze()
        try:
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
        finally:
            # A backtest in progress stops at its next day and is recorded as failed, not left running.
            await run_in_threadpool(engine.alerts.previews.close)
            gc.unfreeze()

    app = FastAPI(
        title="ezstats",
        summary="Analytics for LLM API gateway traffic: ingest, stats, alerts.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,   # served by api/docs.py from the package, not from a CDN
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.engine = engine
    problems.install(app)
    # Added first, so innermost: request ids, CORS and the HTTP metrics wrap the ingest fast path too.
    app.add_middleware(ingest.FastPath, engine=engine)
    metrics.install(app, engine)
    docs.install(app)
    app.add_middleware(RequestIdMiddleware)
    # One router per resource; add new ones to this tuple.
    for module in (health, ingest, jobs, quotas, registry, stats, alerts, credentials, notifications, console):
        app.include_router(module.router)
    origins = engine.settings.cors_origin_list
    # Bearer tokens travel in a header, which CORS allows without credentials; credentials (cookies) are
    # allowed only to origins named one by one, never to any origin.
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
                       allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=_CORS_HEADERS,
                       expose_headers=_CORS_EXPOSED, max_age=600)
    return app
