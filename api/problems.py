"""RFC 9457 problem details: every error the API answers is `application/problem+json`.

Each kind of error has a stable `type` URI, `/problems/<kind>`, served by the app itself with the
kind's description, and a human-readable title; the README's error table lists them all.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.correlation import HEADER, request_id
from api.schemas import Problem
from engine.errors import (
    BatchInProgress,
    Conflict,
    DiskFull,
    EzError,
    IdempotencyKeyReused,
    InvalidBatch,
    InvalidParameter,
    LakeDamaged,
    LimitExceeded,
    MalformedBody,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    QueryError,
    SecretKeyError,
    UnsupportedFormat,
)

PROBLEM = "application/problem+json"
log = logging.getLogger(__name__)


#: Every kind of error: its slug (the last part of its type URI), status, title and what it means.
KINDS: dict[str, tuple[int, str, str]] = {
    "malformed-body": (400, "Malformed body", "The body is not JSON, NDJSON or an Arrow stream at all."),
    "query-failed": (400, "Query failed", "An ad-hoc query was refused or failed."),
    "unauthorized": (401, "Unauthorized", "The bearer token is missing or wrong."),
    "not-found": (404, "Not found", "No such resource (an alert, a key's quota, a job, a route)."),
    "method-not-allowed": (405, "Method not allowed", "The route exists but not with this HTTP method."),
    "conflict": (409, "Conflict", "The request conflicts with the current state (a resolved alert, a running "
                 "job, a batch being stored by another writer, a full preview queue); retry or read the state "
                 "again."),
    "precondition-failed": (412, "Precondition failed", "If-Match names a version that is not the current one."),
    "payload-too-large": (413, "Payload too large", "The body, decompressed, is over EZ_MAX_BODY_BYTES."),
    "unsupported-media-type": (415, "Unsupported media type", "The Content-Type or Content-Encoding is not one "
                               "the route reads."),
    "invalid-request": (422, "Invalid request", "A parameter or body field is missing or out of its domain; "
                        "`detail` names it."),
    "invalid-records": (422, "Invalid records", "Some records of the batch are invalid, or it holds none; nothing "
                        "was stored. `errors` lists row, field and reason."),
    "idempotency-key-reused": (422, "Idempotency-Key reused", "The Idempotency-Key was already used with a "
                               "different body; nothing was stored. Use a new key for a new batch."),
    "limit-exceeded": (422, "Limit exceeded", "The request asks for more than a documented limit allows "
                       "(EZ_STATS_MAX_DAYS, EZ_STATS_MAX_POINTS, EZ_STATS_MAX_GROUPS); `detail` names the limit "
                       "and what to ask instead."),
    "precondition-required": (428, "Precondition required", "The route needs If-Match (the ETag you edited)."),
    "internal-error": (500, "Internal error", "An unexpected failure; it is logged with the answer's request_id "
                       "(also in the X-Request-Id header)."),
    "lake-damaged": (500, "Lake damaged", "A lake file cannot be read; `detail` names it. Run `ezstats lake "
                     "check --repair` to move it to quarantine and recompute the hours it held."),
    "insufficient-storage": (507, "Insufficient storage", "The disk holding the data dir is full; nothing was "
                             "stored. Retry once space is freed."),
}

#: Engine exceptions and the kind each becomes; the most specific class wins.
ENGINE_KINDS: dict[type[EzError], str] = {
    SecretKeyError: "internal-error",
    MalformedBody: "malformed-body",
    InvalidBatch: "invalid-records",
    UnsupportedFormat: "unsupported-media-type",
    PayloadTooLarge: "payload-too-large",
    IdempotencyKeyReused: "idempotency-key-reused",
    BatchInProgress: "conflict",
    DiskFull: "insufficient-storage",
    LakeDamaged: "lake-damaged",
    QueryError: "query-failed",
    NotFound: "not-found",
    LimitExceeded: "limit-exceeded",
    InvalidParameter: "invalid-request",
    PreconditionFailed: "precondition-failed",
    Conflict: "conflict",
}

_BY_STATUS = {status: slug for slug, (status, _, _) in reversed(KINDS.items())}


def type_uri(kind: str) -> str:
    """The type URI of a kind of error (relative: it resolves on the server that answered)."""
    return f"/problems/{kind}"


def problem(kind: str, detail: str | None = None, status: int | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response of one kind."""
    code, title, _ = KINDS[kind]
    status = status or code
    body: dict[str, Any] = {"type": type_uri(kind), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if "request_id" in extra:  # a 5xx: the header too, since the middleware may not see this answer
        headers[HEADER] = extra["request_id"]
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


router = APIRouter(prefix="/problems", tags=["health"])


@router.get("/{kind}", responses={404: {}})
def read_problem_kind(kind: str) -> dict[str, Any]:
    """What one kind of error (a problem `type`) means."""
    if kind not in KINDS:
        raise HTTPException(404, f"no problem type {kind!r}")
    status, title, description = KINDS[kind]
    return {"type": type_uri(kind), "title": title, "status": status, "description": description}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say what the handlers below do: every error answer is a `Problem` as
    problem+json, any operation can answer 500, one with a body 400, one behind a token 401."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("500", {})
            if "requestBody" in operation:  # a body that is not JSON at all
                responses.setdefault("400", {})
            if path.startswith(("/admin", "/v1")):  # behind a bearer token
                responses.setdefault("401", {})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    kind = _BY_STATUS.get(int(code))
                    response["description"] = KINDS[kind][1] if kind else response.get("description", "Error")
                    response["content"] = content
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Register the handlers that turn engine and framework errors into problem+json, and document them."""
    app.include_router(router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(EzError)
    async def engine_error(request: Request, exc: EzError) -> JSONResponse:
        kind = next((k for cls, k in ENGINE_KINDS.items() if isinstance(exc, cls)), "invalid-request")
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidBatch) and not isinstance(exc, MalformedBody):
            extra = {"errors": [e.to_dict() for e in exc.errors], "error_count": exc.total}
        if KINDS[kind][0] >= 500:
            extra["request_id"] = request_id(request)
            log.error("%s answering %s %s (request_id %s): %s", kind, request.method, request.url.path,
                      extra["request_id"], exc)
        return problem(kind, str(exc), **extra)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("unexpected error answering %s %s (request_id %s)", request.method, request.url.path, rid,
                  exc_info=exc)
        return problem("internal-error", f"an unexpected error; it is logged under request_id {rid}", request_id=rid)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        kind = _BY_STATUS.get(exc.status_code)
        if kind is None:  # a status no kind names: RFC 9457's default type
            body = {"type": "about:blank", "title": _reason(exc.status_code), "status": exc.status_code}
            return JSONResponse({**body, **({"detail": detail} if detail else {})}, status_code=exc.status_code,
                                media_type=PROBLEM)
        return problem(kind, detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return problem("invalid-request", "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                    for e in errors), errors=errors)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
