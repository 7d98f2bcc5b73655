"""Request bodies and the API's own answers. Every other answer is an engine type (see each router).

Naming: answers are nouns (`Alert`, `JobRun`, `PeriodStats`), request bodies end in `Body`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from engine.alerts.thresholds import Thresholds

#: Every id (and stored integer) the API takes, in a path, a query or a body: the int64 it is stored as;
#: beyond it answers 422.
Int64 = Annotated[int, Ge(-(2**63)), Le(2**63 - 1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    """Liveness: `degraded` when the data dir is missing. Says nothing of the file system's layout."""

    status: Literal["ok", "degraded"]
    version: str


class QuotaBody(_Body):
    """A key's quota as set by an admin."""

    quota_limit: Int64 = Field(gt=0, description="Quota units allowed per period (compared with sum(quota_cost)).")
    reset_period: Literal["daily", "weekly", "monthly", "never"]
    last_reset_at: AwareDatetime | None = Field(
        None, description="A manual reset: start of the current period. Default: the calendar period's start "
        "(for never: all retained history)."
    )


class AckBody(_Body):
    """Acknowledge an alert."""

    by: str = Field("admin", max_length=200, description="Who acknowledges.")
    note: str | None = Field(None, max_length=2000)
    expires_at: AwareDatetime | None = Field(None, description="The alert re-opens at this instant (RFC 3339 with "
                                             "an offset).")


class ResolveBody(_Body):
    """Resolve an alert by hand."""

    by: str = Field("admin", max_length=200, description="Who resolves.")
    note: str | None = Field(None, max_length=2000, description="Why.")


class PreviewBody(_Body):
    """A backtest request: candidate thresholds (default: the stored ones) over a range of UTC days."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_day: dt.date = Field(alias="from", description="First UTC day replayed (YYYY-MM-DD).")
    to_day: dt.date = Field(alias="to", description="Last UTC day replayed, included (at most 31 days).")
    thresholds: Thresholds | None = Field(None, description="Candidate thresholds; null replays the stored ones.")


class Problem(BaseModel):
    """An error (RFC 9457 problem details, `application/problem+json`)."""

    type: str = Field(description="A URI naming the kind of error (`/problems/<kind>`); GET it for its description.")
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        None, description="Invalid records (row, field, reason) or invalid parameters (loc, msg, type).")
    error_count: int | None = Field(None, description="All invalid records of a refused batch; `errors` lists "
                                    "the first EZ_MAX_ERRORS_REPORTED.")
    request_id: str | None = Field(None, description="On a 5xx: the id the server logged the failure under (also "
                                   "the X-Request-Id header).")


class CredentialBody(_Body):
    """A provider key's OAuth credential as the vendor's CLI wrote it (see `ezstats credentials import`)."""

    provider_type: Literal["codex", "claude-code", "gemini-cli", "antigravity"]
    access_token: str = Field(min_length=1, max_length=20_000)
    refresh_token: str = Field(min_length=1, max_length=20_000)
    expires_at: dt.datetime = Field(description="When the access token expires (RFC 3339 with an offset).")
    account_id: str | None = Field(None, max_length=500, description="The account at the provider.")
    email: str | None = Field(None, max_length=500)
    id_token: str | None = Field(None, max_length=20_000, description="Codex/Google id_token (JWT), if any.")


class ChannelBody(_Body):
    """A notification channel as set by an admin (PUT replaces it; an omitted `secret` keeps the stored one)."""

    type: Literal["alertmanager", "webhook", "slack"] = Field(
        description="`alertmanager`: its base URL (alerts go to /api/v2/alerts); `webhook`: Alertmanager's webhook "
        "payload (v4), signed; `slack`: an incoming-webhook URL.")
    url: str = Field(min_length=1, max_length=2000, description="Where messages go (http or https).")
    secret: str | None = Field(
        None, min_length=1, max_length=1000,
        description="Webhook: the HMAC-SHA256 signing key (required). Alertmanager: a bearer token (optional). "
        "Omitted on an update: the stored one is kept; null removes it. Never answered.")
    min_severity: Literal["warning", "critical"] = Field("warning", description="Alerts below it are not sent.")
    types: list[str] | None = Field(None, description="Alert types sent (e.g. [\"provider_down\"]); null: all.")
    scopes: list[str] | None = Field(
        None, description="Scopes sent: `global`, `master`, `key`, `provider_key`, or one entity as `master:12` "
        "(its keys' alerts included), `key:1201`, `provider_key:101`; null: all.")
    min_interval_seconds: int = Field(
        0, ge=0, le=86_400, description="Least time between two messages; events meanwhile go together in the next.")
    notify_acknowledged: bool = Field(
        False, description="Also notify de-escalations of acknowledged alerts (and acknowledgements); by default an "
        "acknowledged alert is quiet until it escalates.")
