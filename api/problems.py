"""RFC 9457 problem details: every error the API answers is `application/problem+json`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from engine.errors import (
    BatchInProgress,
    Conflict,
    EzError,
    InvalidBatch,
    InvalidParameter,
    MalformedBody,
    NotFound,
    PreconditionFailed,
    QueryError,
    UnsupportedFormat,
)

PROBLEM = "application/problem+json"

# Engine exceptions and the HTTP status each becomes; the most specific class wins.
STATUS: dict[type[EzError], int] = {
    MalformedBody: 400,
    InvalidBatch: 422,
    UnsupportedFormat: 415,
    BatchInProgress: 409,
    QueryError: 400,
    NotFound: 404,
    InvalidParameter: 422,
    PreconditionFailed: 412,
    Conflict: 409,
}


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn engine and framework errors into problem+json."""

    @app.exception_handler(EzError)
    async def engine_error(request: Request, exc: EzError) -> JSONResponse:
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidBatch):
            extra = {"errors": [e.to_dict() for e in exc.errors], "error_count": exc.total}
        return problem(status, type(exc).__name__, str(exc), **extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        title = getattr(exc, "title", None) or _reason(exc.status_code)
        return problem(exc.status_code, title, exc.detail if isinstance(exc.detail, str) else None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return problem(422, "Invalid request", "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                          for e in errors), errors=errors)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
