"""Request dependencies: the engine and the bearer-token checks.

They are coroutines although they never wait: FastAPI runs a plain function dependency on a worker thread,
three thread hops a request that cost more than the work (a tenth of a small ingest batch's CPU).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from pydantic import SecretStr

from engine import Engine


async def get_engine(request: Request) -> Engine:
    """The engine the app was created with."""
    return request.app.state.engine  # type: ignore[no-any-return]


def authorized(header: str, token: SecretStr | None) -> bool:
    """Whether an Authorization header value carries `Bearer <token>` (anything does when no token is set)."""
    if token is None:
        return True
    scheme, _, given = header.partition(" ")
    given = given.strip()
    # An empty token never matches (and Settings refuses to be configured with one).
    return scheme.lower() == "bearer" and bool(given) and secrets.compare_digest(
        given.encode(), token.get_secret_value().encode())


def _check(request: Request, token: SecretStr | None) -> None:
    if not authorized(request.headers.get("authorization", ""), token):
        raise HTTPException(401, "missing or wrong bearer token")


async def require_ingest_token(request: Request, engine: Annotated[Engine, Depends(get_engine)]) -> None:
    """401 unless `Authorization: Bearer $EZ_INGEST_TOKEN` (when that token is set)."""
    _check(request, engine.settings.ingest_token)


async def require_admin_token(request: Request, engine: Annotated[Engine, Depends(get_engine)]) -> None:
    """401 unless `Authorization: Bearer $EZ_ADMIN_TOKEN` (when that token is set)."""
    _check(request, engine.settings.admin_token)


EngineDep = Annotated[Engine, Depends(get_engine)]
IngestAuth = Depends(require_ingest_token)
AdminAuth = Depends(require_admin_token)
