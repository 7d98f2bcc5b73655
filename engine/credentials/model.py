"""What credentials are: the provider types, the tokens a refresh gives, and the typed answers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

ProviderType = Literal["codex", "claude-code", "gemini-cli", "antigravity"]
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
CredentialStatus = Literal["active", "refreshing", "disabled"]


@dataclass(frozen=True)
class Tokens:
    """A credential's secrets and account, in clear: never logged (secrets are left out of its repr)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: dt.datetime
    id_token: str | None = field(default=None, repr=False)
    account_id: str | None = None
    email: str | None = None

    def secrets(self) -> list[str]:
        """The secret strings, to scrub from any text that could reach a log or an answer."""
        return [s for s in (self.access_token, self.refresh_token, self.id_token) if s]


class Credential(BaseModel):
    """A provider key's OAuth credential as operators see it: status, expiry, refresh state; secrets masked."""

    model_config = ConfigDict(frozen=True)

    provider_key_id: int
    provider_type: ProviderType
    status: CredentialStatus = Field(description="`active`: refreshed when due; `refreshing`: a refresh is out at "
                                     "the provider now; `disabled`: the refresh token stopped working (see reason).")
    reason: str | None = Field(description="Why it is disabled; null otherwise.")
    account_id: str | None = Field(description="The account at the provider (Codex/Claude account id).")
    email: str | None
    expires_at: dt.datetime = Field(description="When the access token expires.")
    refresh_due_at: dt.datetime = Field(description="expires_at minus the provider type's lead time.")
    last_refresh_at: dt.datetime | None = Field(description="Last successful refresh.")
    last_attempt_at: dt.datetime | None
    last_outcome: str | None = Field(description="Outcome of the last attempt (see the README's outcome table).")
    last_error: str | None = Field(description="What the last failed attempt said (no secrets).")
    failures: int = Field(description="Consecutive failed attempts (0 after a success).")
    next_attempt_at: dt.datetime | None = Field(description="Backoff: no attempt before this.")
    version: int = Field(description="Increases whenever the tokens change (import or refresh).")
    access_token_hint: str = Field(description="The access token masked: its last 4 characters at most.")
    refresh_token_hint: str = Field(description="The refresh token masked: its last 4 characters at most.")
    imported_at: dt.datetime
    updated_at: dt.datetime


class CredentialList(BaseModel):
    """Every credential, by provider key id."""

    credentials: list[Credential]


class AccessToken(BaseModel):
    """The current access token of a provider key, for the gateway (every read is audited)."""

    provider_key_id: int
    provider_type: ProviderType
    access_token: str
    expires_at: dt.datetime
    version: int = Field(description="The credential version this token belongs to.")


class RefreshAttempt(BaseModel):
    """One attempt to refresh a credential (its history is append-only)."""

    model_config = ConfigDict(frozen=True)

    id: int
    provider_key_id: int
    provider_type: ProviderType
    at: dt.datetime
    trigger: str = Field(description="schedule, request (API, CLI or a Redis event), import or rotate-key.")
    outcome: str
    http_status: int | None = Field(description="The token endpoint's HTTP status, if it answered.")
    error: str | None
    duration_ms: float | None
    expires_at: dt.datetime | None = Field(description="The new expiry, after a refresh.")
    owner: str = Field(description="host:pid:thread that made the attempt.")


class RefreshRequest(BaseModel):
    """An on-demand refresh: queued, running or done, with its outcome once done."""

    id: int
    provider_key_id: int
    source: str = Field(description="api, cli or redis.")
    requested_by: str
    requested_at: dt.datetime
    state: Literal["queued", "running", "done"]
    finished_at: dt.datetime | None
    outcome: str | None = Field(description="refreshed, disabled, retryable, ... (null until done).")
    error: str | None
    credential: Credential | None = Field(None, description="The credential after the refresh, once done.")


class RefreshSummary(BaseModel):
    """What one run of the refresh job did (its run record's details)."""

    due: int = Field(description="Credentials due (expiry minus lead time passed, backoff over).")
    requests: int = Field(description="On-demand requests (API, CLI, Redis events) handled.")
    refreshed: int
    retried: int = Field(description="Credentials that failed with a retryable error and will be tried again.")
    disabled: int
    skipped: int = Field(description="Credentials another process was refreshing, or changed meanwhile.")
    redis_events: int = Field(description="Events taken from the Redis queue.")

    def __str__(self) -> str:
        return (f"refreshed {self.refreshed}, retried {self.retried}, disabled {self.disabled} "
                f"({self.due} due, {self.requests} requested, {self.skipped} skipped)")


class ImportResult(BaseModel):
    """Credentials stored by an import (each re-enabled if it was disabled)."""

    credentials: list[Credential]
