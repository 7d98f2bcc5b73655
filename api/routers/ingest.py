"""POST /v1/logs: batches of log records from the gateway."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from api import metrics
from api.deps import EngineDep, IngestAuth
from engine.decoding import CONTENT_TYPES, ENCODINGS, NDJSON
from engine.errors import InvalidBatch
from engine.lake import BatchReceipt
from engine.schema import json_schema

router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=[IngestAuth])

_ACCEPTED = {*CONTENT_TYPES, "application/jsonl", "application/x-jsonlines"}
_RECORD = json_schema()
_EXAMPLE = {"request_id": "req-1", "created_at": "2026-01-15T08:30:00Z", "master_id": 1, "key_id": 101,
            "model": "gpt-4o", "provider_id": 1, "provider_key_id": 101, "status_code": 200, "latency_ms": 850,
            "prompt_tokens": 120, "completion_tokens": 300, "quota_cost": 540, "is_stream": True}
#: The request body of POST /v1/logs in the OpenAPI document: the record schema for JSON, and what the
#: other two formats hold.
_BODY = {"required": True, "description": "A batch of log records; every record is validated the same way "
         "whatever the format, and one invalid record refuses the whole batch.", "content": {
    "application/json": {"schema": {"type": "array", "items": _RECORD}, "example": [_EXAMPLE]},
    "application/x-ndjson": {"schema": {"type": "string", "description": "NDJSON: one LogRecord JSON object per "
                                        "line (the schema of application/json's items); blank lines are "
                                        "skipped. Also accepted as application/jsonl."}},
    "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary", "description":
                                                       "An Arrow IPC stream whose columns are the LogRecord "
                                                       "fields (any compatible types: created_at a timestamp "
                                                       "or epoch ms); the fastest format."}},
}}


@router.post(
    "/logs",
    status_code=201,
    response_model=BatchReceipt,
    responses={400: {}, 401: {}, 409: {}, 413: {}, 415: {},
               422: {"description": "Invalid records, an empty batch, or an Idempotency-Key reused with another "
                                    "body; nothing stored"}, 507: {}},
    openapi_extra={"requestBody": _BODY},
)
async def create_logs(
    request: Request,
    engine: EngineDep,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=200, description="A key for this batch (IETF Idempotency-Key): a retry with the "
        "same key and body answers the first receipt; the same key with another body answers 422.")] = None,
    content_encoding: Annotated[str | None, Header(
        description=f"{' or '.join(ENCODINGS)} (or none); EZ_MAX_BODY_BYTES applies to the decompressed body.")
    ] = None,
) -> JSONResponse:
    """Store a batch of log records (NDJSON, JSON array or Arrow IPC stream); 201 once it is durable."""
    content_type = request.headers.get("content-type", NDJSON)
    if content_type.split(";")[0].strip().lower() not in _ACCEPTED:
        raise HTTPException(415, f"unsupported content type {content_type!r}; send one of {', '.join(CONTENT_TYPES)}")
    body = await _read_body(request, engine.settings.max_body_bytes)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[BatchReceipt | BaseException] = loop.create_future()

    # No thread waits for the batch: the engine hands its outcome back to this loop once its group is durable.
    def done(outcome: BatchReceipt | BaseException) -> None:
        loop.call_soon_threadsafe(_settle, answer, outcome)

    engine.ingest_body_later(body, content_type, done, idempotency_key, content_encoding)
    receipt = await answer
    if isinstance(receipt, BaseException):
        if isinstance(receipt, InvalidBatch):
            metrics.BATCHES.labels("rejected").inc()
            metrics.RECORDS_REJECTED.inc(max(receipt.total, 1))
        raise receipt
    metrics.BATCHES.labels("replayed" if receipt.replayed else "stored").inc()
    if not receipt.replayed:
        metrics.RECORDS_ACCEPTED.inc(receipt.records)
    headers = {"Idempotent-Replayed": "true"} if receipt.replayed else {}
    return JSONResponse(receipt.model_dump(mode="json"), status_code=201, headers=headers)


def _settle(answer: asyncio.Future[BatchReceipt | BaseException], outcome: BatchReceipt | BaseException) -> None:
    if not answer.done():  # cancelled when the client went away: the batch is stored all the same
        answer.set_result(outcome)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is over the limit of {limit} bytes (EZ_MAX_BODY_BYTES)")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the limit of {limit} bytes (EZ_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)
