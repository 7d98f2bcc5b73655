"""The refresh-token grant (RFC 6749 section 6) over HTTP, and how its failures are classified.

Each provider type has one `Refresher` (see `providers.py`) that shapes the request and reads the answer;
what is common lives here: sending, timing out, and sorting failures into retryable and not.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import httpx

from engine import times
from engine.credentials.model import Tokens

#: Error codes after which the refresh token will never work again (RFC 6749 5.2 and what the CLIs treat so).
NON_RETRYABLE = frozenset({
    "invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope",
    "refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated",
})
#: HTTP statuses worth trying again: timeouts, rate limits and the provider's own failures.
RETRYABLE_STATUS = frozenset({408, 429})
MAX_MESSAGE = 300


class RefreshFailed(Exception):
    """A refresh that did not give new tokens. `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool, http_status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.http_status = http_status
        self.code = code
        self.retry_after = retry_after

    @property
    def outcome(self) -> str:
        """The attempt's outcome name: rate_limited, retryable or rejected."""
        if not self.retryable:
            return "rejected"
        return "rate_limited" if self.http_status == 429 else "retryable"


@dataclass(frozen=True)
class TokenRequest:
    """One request to a token endpoint: a form (`data`) or a JSON body (`json`)."""

    url: str
    form: dict[str, str] | None = None
    json: dict[str, str] | None = None


class Refresher:
    """One provider type's refresh: `request` shapes it, `tokens` reads a successful answer."""

    provider_type: str = ""
    #: Whether a refresh gives a new refresh token and revokes the old one (single use).
    rotates: bool = True

    def request(self, refresh_token: str) -> TokenRequest:
        """The token request that spends `refresh_token`."""
        raise NotImplementedError

    def tokens(self, answer: dict[str, Any], previous: Tokens, now: dt.datetime) -> Tokens:
        """The new tokens of a 200 answer; what it leaves out (refresh token, account) is kept from `previous`.

        Raises:
            RefreshFailed: (retryable) the answer lacks an access token.
        """
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise RefreshFailed("the token endpoint answered 200 without an access_token", retryable=True,
                                http_status=200)
        refresh = answer.get("refresh_token")
        id_token = answer.get("id_token")
        return Tokens(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else previous.refresh_token,
            id_token=id_token if isinstance(id_token, str) and id_token else previous.id_token,
            expires_at=expiry(answer, access, now),
            account_id=previous.account_id,
            email=previous.email,
        )

    def refresh(self, client: httpx.Client, previous: Tokens, now: dt.datetime) -> tuple[Tokens, int]:
        """Spend the refresh token of `previous` at the token endpoint: the new tokens and the HTTP status.

        Raises:
            RefreshFailed: any failure, classified (see the module's lists).
        """
        request = self.request(previous.refresh_token)
        try:
            response = client.post(request.url, data=request.form, json=request.json,
                                   headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise RefreshFailed(f"the token endpoint did not answer in time ({type(exc).__name__})",
                                retryable=True) from None
        except httpx.HTTPError as exc:
            raise RefreshFailed(f"cannot reach the token endpoint: {type(exc).__name__}: {exc}"[:MAX_MESSAGE],
                                retryable=True) from None
        answer = _json(response)
        if response.status_code == 200:
            if not isinstance(answer, dict):
                raise RefreshFailed("the token endpoint answered 200 with a body that is not a JSON object",
                                    retryable=True, http_status=200)
            return self.tokens(answer, previous, now), 200
        raise classify(response.status_code, answer, response.headers.get("retry-after"), now)


def classify(status: int, answer: Any, retry_after: str | None, now: dt.datetime) -> RefreshFailed:
    """The failure a non-200 answer means: never retryable for a 401 or a dead-grant error code."""
    code, description = error_of(answer)
    said = f"{code}: {description}" if code and description else (code or description or "no error code")
    message = f"HTTP {status} from the token endpoint: {said}"[:MAX_MESSAGE]
    if status == 401 or (code is not None and code in NON_RETRYABLE):
        return RefreshFailed(message, retryable=False, http_status=status, code=code)
    wait = times.retry_after(retry_after, now) if status == 429 else None
    return RefreshFailed(message, retryable=True, http_status=status, code=code, retry_after=wait)


def error_of(answer: Any) -> tuple[str | None, str | None]:
    """(code, description) of an OAuth error body: RFC 6749's `{"error", "error_description"}` or OpenAI's
    `{"error": {"code" or "type", "message"}}`."""
    if not isinstance(answer, dict):
        return None, None
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return (str(code) if code else None), _text(error.get("message"))
    return (str(error) if error else None), _text(answer.get("error_description") or answer.get("message"))




def expiry(answer: dict[str, Any], access_token: str, now: dt.datetime) -> dt.datetime:
    """When a new access token expires: `expires_in` seconds from now, else its JWT `exp`, else in an hour."""
    seconds = answer.get("expires_in")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return now + dt.timedelta(seconds=float(seconds))
    if isinstance(seconds, str) and seconds.isdigit():
        return now + dt.timedelta(seconds=int(seconds))
    exp = jwt_claims(access_token).get("exp")
    if isinstance(exp, int | float) and exp > 0:
        return dt.datetime.fromtimestamp(exp, dt.UTC)
    return now + dt.timedelta(hours=1)


def jwt_claims(token: str | None) -> dict[str, Any]:
    """The claims of a JWT, unverified (we only read our own account's id and email from it); {} if not a JWT."""
    if not token or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return str(value)[:MAX_MESSAGE] if value else None
