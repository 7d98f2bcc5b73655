"""/admin/credentials: provider keys' OAuth credentials, their refresh, and their access token for the gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from api.deps import AdminAuth, EngineDep
from api.schemas import CredentialBody, Int64
from engine.credentials import AccessToken, Credential, CredentialList, RefreshAttempt, RefreshRequest

router = APIRouter(prefix="/admin/credentials", tags=["credentials"], dependencies=[AdminAuth])

Actor = Annotated[str, Header(alias="X-Actor", max_length=200, description="Who asks (recorded); default admin.")]


@router.get("")
def read_credentials(engine: EngineDep) -> CredentialList:
    """Every credential: provider key, type, account, status, expiry, last refresh, next attempt, failures."""
    return engine.credentials.list_all()


@router.get("/refresh-requests/{request_id}", responses={404: {}})
def read_refresh_request(engine: EngineDep, request_id: Int64) -> RefreshRequest:
    """One on-demand refresh: queued, running, or done with its outcome."""
    return engine.credentials.get_request(request_id)


@router.get("/{provider_key_id}", responses={404: {}})
def read_credential(engine: EngineDep, provider_key_id: Int64) -> Credential:
    """One credential, secrets masked."""
    return engine.credentials.get(provider_key_id)


@router.put("/{provider_key_id}", responses={422: {}})
def update_credential(engine: EngineDep, provider_key_id: Int64, body: CredentialBody,
                      x_actor: Actor = "admin") -> Credential:
    """Import (or replace) a provider key's credential; creates the key in the registry, re-enables a disabled one."""
    return engine.credentials.put(provider_key_id, body.provider_type, body.access_token, body.refresh_token,
                                  body.expires_at, body.account_id, body.email, body.id_token, by=x_actor)


@router.get("/{provider_key_id}/token", responses={404: {}, 409: {}})
def read_access_token(engine: EngineDep, provider_key_id: Int64, x_actor: Actor = "admin") -> AccessToken:
    """The current access token and its expiry, for the gateway (each read is audited: who, when)."""
    return engine.credentials.token(provider_key_id, x_actor)


@router.get("/{provider_key_id}/attempts", responses={404: {}})
def read_refresh_attempts(engine: EngineDep, provider_key_id: Int64,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[RefreshAttempt]:
    """The credential's refresh history, newest first."""
    return engine.credentials.attempts(provider_key_id, limit)


@router.post("/{provider_key_id}/refresh", responses={202: {"model": RefreshRequest}, 404: {}, 409: {}})
def refresh_credential(
    engine: EngineDep,
    provider_key_id: Int64,
    response: Response,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the outcome (0: only queue).")] = 10,
    x_actor: Actor = "admin",
) -> RefreshRequest:
    """Refresh now: 200 with the outcome, or 202 with the request to poll (`Location`) when it takes longer."""
    request = engine.credentials.request_refresh(provider_key_id, "api", x_actor, wait)
    if request.state != "done":
        response.status_code = 202
        response.headers["Location"] = f"/admin/credentials/refresh-requests/{request.id}"
    return request
