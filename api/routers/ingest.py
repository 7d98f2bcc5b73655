"""POST /v1/logs: batches of log records from the gateway."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.deps import EngineDep, IngestAuth, authorized
from engine import Engine
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
    receipt = request.scope.get(_REFUSED)  # the fast path's outcome for this body (see FastPath)
    if receipt is None:
        receipt = await _ingest(engine, body, content_type, idempotency_key, content_encoding)
    if isinstance(receipt, BaseException):
        if isinstance(receipt, InvalidBatch):
            metrics.BATCHES.labels("rejected").inc()
            metrics.RECORDS_REJECTED.inc(max(receipt.total, 1))
        raise receipt
    _count(receipt)
    headers = {"Idempotent-Replayed": "true"} if receipt.replayed else {}
    return JSONResponse(receipt.model_dump(mode="json"), status_code=201, headers=headers)


async def _ingest(engine: Engine, body: bytes, content_type: str, key: str | None, encoding: str | None
                  ) -> BatchReceipt | BaseException:
    """The engine's receipt for a body, or its refusal. No thread waits for the batch: the engine hands the outcome
    back to this loop once its group is durable."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[BatchReceipt | BaseException] = loop.create_future()

    def done(outcome: BatchReceipt | BaseException) -> None:
        loop.call_soon_threadsafe(_settle, answer, outcome)

    engine.ingest_body_later(body, content_type, done, key, encoding)
    return await answer


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


def _count(receipt: BatchReceipt) -> None:
    metrics.BATCHES.labels("replayed" if receipt.replayed else "stored").inc()
    if not receipt.replayed:
        metrics.RECORDS_ACCEPTED.inc(receipt.records)


class FastPath:
    """POST /v1/logs in its plain case, answered without FastAPI's routing, dependencies and response classes.

    At hundreds of small batches a second those cost about as much CPU as storing the batches. The plain case
    is an authorized request with no query string, an accepted Content-Type, a valid Idempotency-Key (or none)
    and a body within EZ_MAX_BODY_BYTES that the engine stores: it answers the same 201 and receipt as the
    route. Anything else goes to the route (the body read so far handed on, and a refusal with it), which
    answers it as documented. It sits inside the other middleware, so request ids, CORS and the HTTP metrics
    apply to it as to every route.
    """

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine
        self.answered = 0  # requests this path answered itself: what a test reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/logs"
                or scope.get("query_string") or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _PLAIN_HEADERS:
                if name in found:  # a header sent twice: the route decides what that means
                    await self.app(scope, receive, send)
                    return
                found[name] = value.decode("latin-1")
        settings = self.engine.settings
        content_type = found.get(b"content-type", NDJSON)
        key = found.get(b"idempotency-key")
        declared = found.get(b"content-length", "")
        if (content_type.split(";")[0].strip().lower() not in _ACCEPTED
                or (key is not None and not 1 <= len(key) <= 200)
                or (declared.isdigit() and int(declared) > settings.max_body_bytes)
                or not authorized(found.get(b"authorization", ""), settings.ingest_token)):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > settings.max_body_bytes or not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if size > settings.max_body_bytes:
            await self.app(scope, _replaying(body, receive), send)
            return
        receipt = await _ingest(self.engine, body, content_type, key, found.get(b"content-encoding"))
        if isinstance(receipt, BaseException):
            # Refused: the route answers the problem, from this refusal. Ingesting the body again would decode it
            # twice, and could answer otherwise (a batch in progress may have been stored meanwhile).
            await self.app({**scope, _REFUSED: receipt}, _replaying(body, receive), send)
            return
        _count(receipt)
        self.answered += 1
        payload = receipt.model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if receipt.replayed:
            headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


#: The scope key under which the fast path hands a refusal to the route.
_REFUSED = "ezstats.refused"
#: The request headers the plain case reads.
_PLAIN_HEADERS = frozenset({b"content-type", b"content-length", b"content-encoding", b"idempotency-key",
                            b"authorization"})


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then what the client sends next (its disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
