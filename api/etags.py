"""Strong ETags and conditional GET for read-only JSON answers."""

from __future__ import annotations

import hashlib

from fastapi import Request, Response
from pydantic import BaseModel


def json_response(request: Request, model: BaseModel, cache_control: str = "no-cache") -> Response:
    """The model as JSON with a strong ETag of its bytes; 304 when If-None-Match already has it."""
    body = model.model_dump_json().encode()
    tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": cache_control}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _matches(header: str | None, tag: str) -> bool:
    if not header:
        return False
    given = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in given or tag in given
