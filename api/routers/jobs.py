"""/admin/jobs: the scheduled jobs, their runs, and running one now."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import AdminAuth, EngineDep
from api.schemas import JobPublic, JobRunPublic

router = APIRouter(prefix="/admin/jobs", tags=["jobs"], dependencies=[AdminAuth])


@router.get("", response_model=list[JobPublic])
def read_jobs(engine: EngineDep) -> list[JobPublic]:
    """Every scheduled job with its schedule, last run and next run."""
    return [JobPublic.model_validate(asdict(s)) for s in engine.jobs.status(engine.clock())]


@router.get("/{name}/runs", response_model=list[JobRunPublic])
def read_job_runs(engine: EngineDep, name: str,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobRunPublic]:
    """The latest runs of one job, newest first."""
    return [JobRunPublic.model_validate(asdict(r)) for r in engine.jobs.runs(name, limit)]


@router.post("/{name}/run", response_model=JobRunPublic, responses={404: {}, 409: {}})
async def run_job(engine: EngineDep, name: str) -> JobRunPublic:
    """Run one job now and answer its run record once it has finished (409 while it is already running)."""
    run = await run_in_threadpool(engine.jobs.run, name)
    return JobRunPublic.model_validate(asdict(run))
