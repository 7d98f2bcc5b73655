"""One HTTP POST to a receiver and what came back: status, latency, Retry-After, a short body, a safe error."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from engine import times

# httpx logs every request's full URL at INFO; a Slack URL is a credential, so its log stays quiet.
logging.getLogger("httpx").setLevel(logging.WARNING)

#: 4xx answers that mean "not now" rather than "never": everything else in 4xx dead-letters at once.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
#: Longest Retry-After honoured (a receiver asking for more is retried after this).
MAX_RETRY_AFTER = 3600.0
BODY_CHARS = 2000
USER_AGENT = "ezstats-notifier/1"


@dataclass(frozen=True)
class Response:
    """How one POST went."""

    ok: bool
    status_code: int | None
    latency_ms: float
    retry_after: float | None = None
    body: str = ""
    error: str | None = None

    @property
    def permanent(self) -> bool:
        """The receiver refused the message for good (a 3xx or a 4xx that retrying cannot fix)."""
        code = self.status_code
        return code is not None and (300 <= code < 400 or (400 <= code < 500 and code not in RETRYABLE_4XX))

    def describe(self) -> str:
        """A one-line account of a failure, for the attempt log."""
        if self.error:
            return self.error
        excerpt = " ".join(self.body.split())[:200]
        return f"HTTP {self.status_code}" + (f": {excerpt}" if excerpt else "")


def post(client: httpx.Client, url: str, body: bytes, headers: Mapping[str, str],
         secrets: Iterable[str] = ()) -> Response:
    """POST `body` to `url` and describe the answer; never raises for a network failure.

    `secrets` (the URL itself for Slack, a signing key...) are masked out of any error text.
    """
    started = time.perf_counter()
    try:
        answer = client.post(url, content=body, headers={"User-Agent": USER_AGENT, **headers})
    except httpx.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        return Response(False, None, round(latency, 2), error=_masked(f"{type(exc).__name__}: {exc}", [url, *secrets]))
    latency = (time.perf_counter() - started) * 1000
    text = answer.text[:BODY_CHARS]
    return Response(answer.is_success, answer.status_code, round(latency, 2),
                    retry_after(answer.headers.get("retry-after")), _masked(text, [url, *secrets]))


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait, capped at an hour; None when absent or unreadable."""
    wait = times.retry_after(value, now or dt.datetime.now(dt.UTC))
    return None if wait is None else min(wait, MAX_RETRY_AFTER)


def _masked(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
