"""Response models of the API, kept apart from engine types."""

from __future__ import annotations

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
