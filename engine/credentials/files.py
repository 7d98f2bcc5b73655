"""Reading the credential files the tools write, into provider type + tokens.

- CLIProxyAPI auth files: JSON with `"type": "codex" | "claude" | "gemini" | "antigravity"`; Codex and
  Claude keep `access_token`, `refresh_token`, `id_token`, `account_id`, `email`, `expired` (RFC 3339) at
  the top, Gemini nests an oauth2 token under `token` (`expiry`), Antigravity has `expired` or
  `timestamp` (ms) + `expires_in`.
- Codex CLI `~/.codex/auth.json`: `{"tokens": {"id_token", "access_token", "refresh_token", "account_id"},
  "last_refresh"}`; the expiry is the access token's JWT `exp`.
- Claude Code `~/.claude/.credentials.json`: `{"claudeAiOauth": {"accessToken", "refreshToken", "expiresAt"
  (ms)}}`.
- Gemini CLI `~/.gemini/oauth_creds.json`: `{"access_token", "refresh_token", "id_token", "expiry_date" (ms)}`;
  the same shape serves Antigravity when the type is given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from engine.credentials.model import PROVIDER_TYPES, Tokens
from engine.credentials.oauth import jwt_claims
from engine.credentials.providers import codex_account
from engine.errors import InvalidParameter

#: CLIProxyAPI's `type` of each provider type.
CLIPROXY_TYPES = {"codex": "codex", "claude": "claude-code", "gemini": "gemini-cli", "gemini-cli": "gemini-cli",
                  "antigravity": "antigravity"}


@dataclass(frozen=True)
class Parsed:
    """What one file holds: its provider type, its tokens, and its format (for messages)."""

    provider_type: str
    tokens: Tokens
    format: str


def parse(document: Any, provider_type: str | None, now: dt.datetime) -> Parsed:
    """The credential of a parsed JSON file; `provider_type` overrides what the file says or implies.

    Raises:
        InvalidParameter: not a format we read, or a token missing (the message never holds a token).
    """
    if provider_type is not None and provider_type not in PROVIDER_TYPES:
        raise InvalidParameter(f"unknown provider type {provider_type!r}; use {', '.join(PROVIDER_TYPES)}")
    if not isinstance(document, dict):
        raise InvalidParameter("not a JSON object")
    if isinstance(document.get("claudeAiOauth"), dict):
        oauth = document["claudeAiOauth"]
        tokens = _tokens(oauth.get("accessToken"), oauth.get("refreshToken"), _millis(oauth.get("expiresAt")), now)
        return Parsed(provider_type or "claude-code", tokens, "Claude Code .credentials.json")
    if isinstance(document.get("tokens"), dict):
        inner = document["tokens"]
        account, email = codex_account(inner.get("id_token"))
        tokens = _tokens(inner.get("access_token"), inner.get("refresh_token"), None, now,
                         id_token=inner.get("id_token"), account_id=_str(inner.get("account_id")) or account,
                         email=email)
        return Parsed(provider_type or "codex", tokens, "Codex auth.json")
    kind = document.get("type")
    if isinstance(kind, str) and kind in CLIPROXY_TYPES:
        return _cliproxy(document, provider_type or CLIPROXY_TYPES[kind], now)
    if "expiry_date" in document or ("access_token" in document and "refresh_token" in document):
        email = jwt_claims(document.get("id_token")).get("email")
        tokens = _tokens(document.get("access_token"), document.get("refresh_token"),
                         _millis(document.get("expiry_date")) or _instant(document.get("expiry")), now,
                         id_token=document.get("id_token"), email=_str(email) or _str(document.get("email")),
                         account_id=_str(document.get("account_id")))
        return Parsed(provider_type or "gemini-cli", tokens, "Gemini CLI oauth_creds.json")
    raise InvalidParameter("not a credential file we read (CLIProxyAPI auth file, Codex auth.json, Claude Code "
                           ".credentials.json or Gemini CLI oauth_creds.json)")


def _cliproxy(document: dict[str, Any], provider_type: str, now: dt.datetime) -> Parsed:
    nested = document.get("token")
    source: dict[str, Any] = nested if isinstance(nested, dict) else document
    expires = _instant(source.get("expiry")) or _instant(document.get("expired"))
    if expires is None and isinstance(document.get("timestamp"), int | float) and document.get("expires_in"):
        expires = _millis(document["timestamp"])
        expires = expires + dt.timedelta(seconds=float(document["expires_in"])) if expires else None
    id_token = _str(source.get("id_token")) or _str(document.get("id_token"))
    account, email = codex_account(id_token) if provider_type == "codex" else (None, None)
    tokens = _tokens(source.get("access_token"), source.get("refresh_token"), expires, now, id_token=id_token,
                     account_id=_str(document.get("account_id")) or account,
                     email=_str(document.get("email")) or email)
    return Parsed(provider_type, tokens, f"CLIProxyAPI {document.get('type')} auth file")


def _tokens(access: Any, refresh: Any, expires: dt.datetime | None, now: dt.datetime, id_token: Any = None,
            account_id: str | None = None, email: str | None = None) -> Tokens:
    if not isinstance(access, str) or not access:
        raise InvalidParameter("no access token in it")
    if not isinstance(refresh, str) or not refresh:
        raise InvalidParameter("no refresh token in it: it cannot be refreshed")
    if expires is None:
        exp = jwt_claims(access).get("exp")
        # Unknown expiry: due now, so the refresh job learns the real one.
        expires = dt.datetime.fromtimestamp(exp, dt.UTC) if isinstance(exp, int | float) and exp > 0 else now
    return Tokens(access_token=access, refresh_token=refresh, expires_at=expires,
                  id_token=id_token if isinstance(id_token, str) and id_token else None,
                  account_id=account_id, email=email)


def _millis(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    return None


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
