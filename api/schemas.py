"""Response models of the API, kept apart from engine types."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class BatchAccepted(BaseModel):
    """A stored batch: the answer is the same when the batch is sent again."""

    batch_id: str = Field(description="The Idempotency-Key sent, or sha256 of the body.")
    records: int = Field(description="How many records the batch stored.")
    files: list[str] = Field(description="Parquet files the batch was published as, relative to the data dir.")


class Health(BaseModel):
    """Liveness and where the data is."""

    status: str
    data_dir: str
    version: str


class JobRunPublic(BaseModel):
    """One run of a job."""

    run_id: int
    job: str
    trigger: str = Field(description="`schedule` or `manual`.")
    due_at: dt.datetime | None = Field(description="The scheduled tick it ran for (null when run by hand).")
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str = Field(description="`running`, `ok`, `failed` or `abandoned` (its process stopped).")
    rows: int | None = Field(description="Rows the run touched.")
    message: str | None
    details: dict[str, Any]
    error: str | None
    duration_ms: float | None


class JobPublic(BaseModel):
    """A scheduled job: when it runs, how it last went, when it runs next."""

    name: str
    description: str
    schedule: str = Field(description="Seconds between runs, or a UTC cron expression.")
    last_run: JobRunPublic | None
    next_run_at: dt.datetime = Field(description="The next tick; a past time means it is due now.")


class QuotaIn(BaseModel):
    """A key's quota as set by an admin."""

    quota_limit: int = Field(gt=0, description="Quota units allowed per period (compared with sum(quota_cost)).")
    reset_period: Literal["daily", "weekly", "monthly", "never"]
    last_reset_at: dt.datetime | None = Field(
        None, description="A manual reset: start of the current period. Default: the calendar period's start "
        "(for never: all retained history)."
    )


class QuotaPublic(BaseModel):
    """A key's quota."""

    key_id: int
    quota_limit: int
    reset_period: str
    last_reset_at: dt.datetime
    updated_at: dt.datetime


class QuotaUsagePublic(BaseModel):
    """A key's usage in its current quota period."""

    key_id: int
    key_name: str | None = Field(description="The key's name in the registry, if it has one.")
    quota_limit: int
    used: int = Field(description="Exact sum of quota_cost since period_start.")
    remaining: int
    ratio: float = Field(description="used / quota_limit.")
    period_start: dt.datetime
    period_end: dt.datetime | None = Field(description="The next reset; null for `never`.")


class RegistrySynced(BaseModel):
    """What a registry sync changed, per section."""

    upserted: dict[str, int]
    deleted: dict[str, int]
