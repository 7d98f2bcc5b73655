"""/admin/jobs: the scheduled jobs, their runs, and running one now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminAuth, EngineDep
from engine.jobs import Job, JobRun

router = APIRouter(prefix="/admin/jobs", tags=["jobs"], dependencies=[AdminAuth])


@router.get("")
def read_jobs(engine: EngineDep) -> list[Job]:
    """Every scheduled job with its schedule, last run and next run."""
    return engine.jobs.status(engine.clock())


@router.get("/{name}/runs", responses={404: {}})
def read_job_runs(engine: EngineDep, name: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobRun]:
    """The latest runs of one job, newest first."""
    return engine.jobs.runs(name, limit)


@router.post("/{name}/run", responses={404: {}, 409: {}})
def run_job(engine: EngineDep, name: str) -> JobRun:
    """Run one job now and answer its run record once it has finished (409 while it is already running)."""
    return engine.jobs.run(name)
