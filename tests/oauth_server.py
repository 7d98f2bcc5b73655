"""A fake OAuth token server on loopback implementing the four providers' refresh contracts.

- codex (`/codex/oauth/token`): form (or JSON) with client_id and scope; single-use refresh tokens: a
  spent one answers `{"error": {"code": "refresh_token_reused"}}`; answers carry an id_token JWT.
- claude-code (`/claude/v1/oauth/token`): JSON only; the old refresh token is revoked (invalid_grant);
  answers carry the account.
- gemini-cli and antigravity (`/google/token`): form with client_id and client_secret, each account tied to
  its app's client pair; refresh tokens are not rotated.
Scripted misbehaviour: `fail(provider, status, body, headers, times)` answers the next requests with an
error (5xx flaps, 429 with Retry-After, 401, invalid_grant...), `delay` holds answers (slow endpoint; the
token is rotated before the wait, so a client killed meanwhile has spent it), `garbage` answers 200 with a
body that is not JSON.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CODEX_CLIENT = "app_EMoamEEZ73f0CkXaXp7hrann"
CLAUDE_CLIENT = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
GEMINI_CLIENT = ("gemini-client.apps.example", "gemini-secret")
ANTIGRAVITY_CLIENT = ("antigravity-client.apps.example", "antigravity-secret")
PATHS = {"/codex/oauth/token": "codex", "/claude/v1/oauth/token": "claude-code", "/google/token": "google"}


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT with these claims (the refreshers only read them)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


@dataclass
class Account:
    provider: str
    refresh_token: str
    access_token: str
    account_id: str
    email: str
    spent: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class Seen:
    path: str
    provider: str
    content_type: str
    body: dict[str, Any]
    at: float


class FakeOAuth:
    """The server and its state; `start()` binds a free loopback port."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.accounts: dict[str, Account] = {}
        self.requests: list[Seen] = []
        self.outcomes: Counter[str] = Counter()
        self.scripts: dict[str, deque[tuple[int, Any, dict[str, str]]]] = {}
        self.delay = 0.0
        self.garbage = 0
        self.received = threading.Event()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # -- setup --------------------------------------------------------------------------------

    def start(self) -> FakeOAuth:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def settings(self) -> dict[str, Any]:
        """Settings that point every provider type at this server."""
        return {
            "oauth_codex_token_url": f"{self.base}/codex/oauth/token",
            "oauth_claude_code_token_url": f"{self.base}/claude/v1/oauth/token",
            "oauth_gemini_cli_token_url": f"{self.base}/google/token",
            "oauth_gemini_cli_client_id": GEMINI_CLIENT[0], "oauth_gemini_cli_client_secret": GEMINI_CLIENT[1],
            "oauth_antigravity_token_url": f"{self.base}/google/token",
            "oauth_antigravity_client_id": ANTIGRAVITY_CLIENT[0],
            "oauth_antigravity_client_secret": ANTIGRAVITY_CLIENT[1],
        }

    def account(self, provider: str, name: str = "a") -> Account:
        """A new account of `provider` (codex, claude-code, gemini-cli, antigravity) with fresh tokens."""
        n = next(self._ids)
        account = Account(provider, f"rt-{provider}-{name}-{n}-{'r' * 24}", f"at-{provider}-{name}-{n}-{'a' * 24}",
                          f"acct-{name}-{n}", f"{name}{n}@example.com")
        with self.lock:
            self.accounts[account.account_id] = account
        return account

    def fail(self, provider: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
             times: int = 1) -> None:
        """Answer the next `times` requests for `provider` (codex, claude-code, google) with this error."""
        with self.lock:
            for _ in range(times):
                self.scripts.setdefault(provider, deque()).append((status, body, headers or {}))

    def calls(self, provider: str | None = None) -> int:
        return sum(1 for r in self.requests if provider is None or r.provider == provider)

    def works(self, account: Account) -> bool:
        """Whether the account's current refresh token is still usable (not spent or revoked)."""
        return not account.revoked

    # -- answering ----------------------------------------------------------------------------

    def answer(self, path: str, content_type: str, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        provider = PATHS.get(path)
        if provider is None:
            return 404, {"error": "not_found"}, {}
        body: dict[str, Any]
        if content_type.startswith("application/json"):
            body = json.loads(raw or b"{}")
        else:
            body = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
        with self.lock:
            self.requests.append(Seen(path, provider, content_type, body, time.time()))
            script = self.scripts.get(provider)
            scripted = script.popleft() if script else None
        self.received.set()
        if scripted is not None:
            self.outcomes["scripted"] += 1
            return scripted
        if self.garbage:
            self.garbage -= 1
            return 200, b"<html>upstream proxy error</html>", {}
        if provider == "claude-code" and not content_type.startswith("application/json"):
            return 400, {"error": "invalid_request", "error_description": "expected JSON"}, {}
        if body.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}, {}
        account, problem = self._account(provider, body)
        if problem is not None:
            self.outcomes[problem[1].get("error") if isinstance(problem[1].get("error"), str) else "reused"] += 1
            return problem
        assert account is not None
        with self.lock:
            n = next(self._ids)
            account.access_token = f"at-{account.provider}-{n}-{'b' * 24}"
            if account.provider in ("codex", "claude-code"):
                account.spent.add(account.refresh_token)
                account.refresh_token = f"rt-{account.provider}-{n}-{'s' * 24}"
            self.outcomes["rotated"] += 1
            answer = self._tokens(account)
        if self.delay:
            time.sleep(self.delay)
        return 200, answer, {}

    def _account(self, provider: str, body: dict[str, Any]) -> tuple[Account | None, Any]:
        token = body.get("refresh_token")
        if provider == "codex" and (body.get("client_id") != CODEX_CLIENT or body.get("scope") != "openid profile email"):
            return None, (401, {"error": {"code": "invalid_client", "message": "bad client"}}, {})
        if provider == "claude-code" and body.get("client_id") != CLAUDE_CLIENT:
            return None, (401, {"error": "invalid_client"}, {})
        for account in self.accounts.values():
            if provider == "google" and account.provider in ("gemini-cli", "antigravity"):
                pair = GEMINI_CLIENT if account.provider == "gemini-cli" else ANTIGRAVITY_CLIENT
                if token == account.refresh_token and (body.get("client_id"), body.get("client_secret")) != pair:
                    return None, (401, {"error": "invalid_client", "error_description": "Unauthorized"}, {})
            elif account.provider != provider:
                continue
            if token == account.refresh_token:
                if account.revoked:
                    return None, (400, {"error": "invalid_grant", "error_description": "Token has been revoked."}, {})
                return account, None
            if token in account.spent:
                if provider == "codex":
                    return None, (400, {"error": {"code": "refresh_token_reused", "message": "Your refresh token "
                                                  "has already been used to generate a new access token."}}, {})
                return None, (400, {"error": "invalid_grant", "error_description": "Refresh token revoked"}, {})
        return None, (400, {"error": "invalid_grant", "error_description": "Bad refresh token"}, {})

    def _tokens(self, account: Account) -> dict[str, Any]:
        out: dict[str, Any] = {"access_token": account.access_token, "expires_in": self.expires_in,
                               "token_type": "Bearer"}
        if account.provider == "codex":
            out["refresh_token"] = account.refresh_token
            out["id_token"] = jwt({"email": account.email, "https://api.openai.com/auth":
                                   {"chatgpt_account_id": account.account_id}})
        elif account.provider == "claude-code":
            out["refresh_token"] = account.refresh_token
            out["account"] = {"uuid": account.account_id, "email_address": account.email}
            out["organization"] = {"uuid": "org-1", "name": "Org"}
        else:
            out["scope"] = "https://www.googleapis.com/auth/cloud-platform"
            out["id_token"] = jwt({"email": account.email})
        return out


def _handler(server: FakeOAuth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, body, headers = server.answer(self.path, self.headers.get("content-type", ""), raw)
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) or was killed

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
