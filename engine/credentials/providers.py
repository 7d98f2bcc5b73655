"""One refresher per provider type: the request shape each vendor's CLI uses, and what its answer carries.

Every URL, client id and client secret is a setting (`EZ_OAUTH_<TYPE>_...`), defaulting to the public
values the CLIs (and CLIProxyAPI) use, so tests point them at a loopback server.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.credentials.model import Tokens
from engine.credentials.oauth import Refresher, TokenRequest, jwt_claims
from engine.settings import Settings

#: The claim of a Codex id_token that holds the ChatGPT account.
OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"


class CodexRefresher(Refresher):
    """OpenAI (Codex CLI): a form with the client id and scope; single-use refresh tokens; the id_token (JWT)
    names the account and its email."""

    provider_type = "codex"
    rotates = True

    def __init__(self, settings: Settings) -> None:
        self.url = settings.oauth_codex_token_url
        self.client_id = settings.oauth_codex_client_id

    def request(self, refresh_token: str) -> TokenRequest:
        return TokenRequest(self.url, form={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                            "client_id": self.client_id, "scope": "openid profile email"})

    def tokens(self, answer: dict[str, Any], previous: Tokens, now: dt.datetime) -> Tokens:
        tokens = super().tokens(answer, previous, now)
        account_id, email = codex_account(tokens.id_token)
        return _with_account(tokens, account_id or previous.account_id, email or previous.email)


class ClaudeCodeRefresher(Refresher):
    """Anthropic (Claude Code): a JSON body; the old refresh token is revoked; the answer names the account."""

    provider_type = "claude-code"
    rotates = True

    def __init__(self, settings: Settings) -> None:
        self.url = settings.oauth_claude_code_token_url
        self.client_id = settings.oauth_claude_code_client_id

    def request(self, refresh_token: str) -> TokenRequest:
        return TokenRequest(self.url, json={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                            "client_id": self.client_id})

    def tokens(self, answer: dict[str, Any], previous: Tokens, now: dt.datetime) -> Tokens:
        tokens = super().tokens(answer, previous, now)
        found = answer.get("account")
        account: dict[str, Any] = found if isinstance(found, dict) else {}
        account_id = account.get("uuid") if isinstance(account.get("uuid"), str) else None
        email = account.get("email_address") if isinstance(account.get("email_address"), str) else None
        return _with_account(tokens, account_id or previous.account_id, email or previous.email)


class GoogleRefresher(Refresher):
    """Google's token endpoint (installed-app client): a form with client id and secret; the refresh token is
    normally kept (a new one in the answer replaces it)."""

    rotates = False

    def __init__(self, url: str, client_id: str, client_secret: str) -> None:
        self.url = url
        self.client_id = client_id
        self.client_secret = client_secret

    def request(self, refresh_token: str) -> TokenRequest:
        return TokenRequest(self.url, form={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                            "client_id": self.client_id, "client_secret": self.client_secret})

    def tokens(self, answer: dict[str, Any], previous: Tokens, now: dt.datetime) -> Tokens:
        tokens = super().tokens(answer, previous, now)
        email = jwt_claims(tokens.id_token).get("email")
        return _with_account(tokens, previous.account_id, email if isinstance(email, str) else previous.email)


class GeminiCliRefresher(GoogleRefresher):
    """Gemini CLI accounts (the CLI's own client pair)."""

    provider_type = "gemini-cli"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.oauth_gemini_cli_token_url, settings.oauth_gemini_cli_client_id,
                         settings.oauth_gemini_cli_client_secret)


class AntigravityRefresher(GoogleRefresher):
    """Antigravity accounts (Antigravity's own client pair, same Google endpoint)."""

    provider_type = "antigravity"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.oauth_antigravity_token_url, settings.oauth_antigravity_client_id,
                         settings.oauth_antigravity_client_secret)


def refreshers(settings: Settings) -> dict[str, Refresher]:
    """The refresher of each provider type."""
    found: list[Refresher] = [CodexRefresher(settings), ClaudeCodeRefresher(settings), GeminiCliRefresher(settings),
                              AntigravityRefresher(settings)]
    return {r.provider_type: r for r in found}


def lead_time(settings: Settings, provider_type: str) -> dt.timedelta:
    """How long before expiry a credential of this type is refreshed (EZ_OAUTH_<TYPE>_LEAD_SECONDS)."""
    seconds = getattr(settings, f"oauth_{provider_type.replace('-', '_')}_lead_seconds")
    return dt.timedelta(seconds=int(seconds))


def codex_account(id_token: str | None) -> tuple[str | None, str | None]:
    """(ChatGPT account id, email) of a Codex id_token."""
    claims = jwt_claims(id_token)
    found = claims.get(OPENAI_AUTH_CLAIM)
    auth: dict[str, Any] = found if isinstance(found, dict) else {}
    account = auth.get("chatgpt_account_id")
    email = claims.get("email")
    return (account if isinstance(account, str) else None), (email if isinstance(email, str) else None)


def _with_account(tokens: Tokens, account_id: str | None, email: str | None) -> Tokens:
    return Tokens(access_token=tokens.access_token, refresh_token=tokens.refresh_token, id_token=tokens.id_token,
                  expires_at=tokens.expires_at, account_id=account_id, email=email)
