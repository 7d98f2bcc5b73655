"""One credential's refresh, start to end.

1. claim it (a lease in the control store: one process at a time, across processes);
2. spend its refresh token at the provider's token endpoint (one refresher per provider type);
3. store the answer with a compare-and-swap on the version it started from, before anything else;
4. tell the gateway (Redis Pub/Sub or webhook).
A retryable failure (network, timeout, 408, 429, 5xx, an unreadable 200) backs off exponentially with jitter,
within a run (`EZ_OAUTH_ATTEMPTS_PER_RUN`) and across runs (`next_attempt_at`, at most
`EZ_OAUTH_BACKOFF_MAX_SECONDS`; a 429's Retry-After is honoured). A non-retryable one (401, invalid_grant,
...) is checked again once, after re-reading the stored credential (providers have answered invalid_grant
during outages, and another process may have rotated it); then the credential is disabled with the reason
and `on_disabled` is told.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import httpx

from engine.credentials.notify import Notifier
from engine.credentials.oauth import Refresher, RefreshFailed
from engine.credentials.store import Claim, CredentialStore
from engine.errors import NotFound
from engine.infra import Infra

log = logging.getLogger(__name__)

#: A retry within a run waits at most this long; a longer backoff ends the run's attempts at that credential.
IN_RUN_SLEEP_MAX = 30.0
#: Error codes that say the refresh token was spent already (by us, if a refresh was interrupted).
SPENT = frozenset({"refresh_token_reused", "invalid_grant", "refresh_token_invalidated"})
#: Outcomes of attempts that will be tried again.
RETRYING = frozenset({"retryable", "rate_limited"})


class Refreshing:
    """The refresh of one credential at a time (`Credentials` runs many of these on a thread pool)."""

    def __init__(self, infra: Infra, store: CredentialStore, refreshers: dict[str, Refresher], notifier: Notifier,
                 sleep: Callable[[float], None], jitter: Callable[[], float],
                 on_disabled: Callable[[int, str], None]) -> None:
        """`sleep` waits between attempts, `jitter` draws in [0, 1) for the backoff, `on_disabled(provider_key_id,
        reason)` hears of each credential disabled."""
        self.infra = infra
        self.store = store
        self.refreshers = refreshers
        self.notifier = notifier
        self.sleep = sleep
        self.jitter = jitter
        self.on_disabled = on_disabled

    def refresh(self, provider_key_id: int, version: int | None, trigger: str) -> str:
        """Refresh a credential (still at `version`, unless None): up to EZ_OAUTH_ATTEMPTS_PER_RUN attempts, backing
        off in between while they fail retryably. Returns the outcome: refreshed, retryable, rate_limited,
        disabled, superseded, busy (another holder) or inactive (disabled before)."""
        owner_ = owner()
        attempts = self.infra.settings.oauth_attempts_per_run
        outcome = "busy"
        for attempt in range(1, attempts + 1):
            claim = self.store.claim(provider_key_id, version, owner_, self.infra.now(), self.lease(), trigger)
            if claim is None:
                return outcome if attempt > 1 else self._unclaimable(provider_key_id, version)
            version = claim.version
            outcome, delay = self._attempt(claim, trigger)
            if outcome not in RETRYING or attempt == attempts or delay is None or delay > IN_RUN_SLEEP_MAX:
                return outcome
            self.sleep(delay)
        return outcome

    def _unclaimable(self, provider_key_id: int, version: int | None) -> str:
        try:
            row = self.store.row(provider_key_id)
        except NotFound:
            return "not_found"
        if row["status"] == "disabled":
            return "inactive"
        return "superseded" if version is not None and row["version"] != version else "busy"

    def _attempt(self, claim: Claim, trigger: str) -> tuple[str, float | None]:
        """One claimed attempt: (outcome, backoff before the next one)."""
        refresher = self.refreshers[claim.provider_type]
        started = time.monotonic()
        status: int | None = None
        try:
            with httpx.Client(timeout=self.infra.settings.oauth_timeout_seconds) as client:
                try:
                    tokens, status = refresher.refresh(client, claim.tokens, self.infra.now())
                except RefreshFailed as failure:
                    if failure.retryable:
                        raise
                    # Providers have answered invalid_grant during outages, and another process may have
                    # rotated the token: read the stored credential again, and try once more.
                    if self.store.row(claim.provider_key_id)["version"] != claim.version:
                        self.store.release(claim, self.infra.now(), trigger, "superseded",
                                           "another process refreshed it meanwhile")
                        return "superseded", None
                    tokens, status = refresher.refresh(client, claim.tokens, self.infra.now())
        except RefreshFailed as failure:
            return self._failed(claim, failure, trigger, (time.monotonic() - started) * 1000)
        now = self.infra.now()
        # Stored before anything else: a crash after this line loses nothing.
        version = self.store.store_refreshed(claim, tokens, now, trigger, status,
                                             (time.monotonic() - started) * 1000)
        if version is None:
            return "superseded", None
        log.info("refreshed the %s credential of provider key %d (version %d)", claim.provider_type,
                 claim.provider_key_id, version)
        self.notifier.changed(claim.provider_key_id, claim.provider_type, version, now)
        return "refreshed", None

    def _failed(self, claim: Claim, failure: RefreshFailed, trigger: str,
                duration_ms: float) -> tuple[str, float | None]:
        now = self.infra.now()
        message = redact(failure.message, claim.tokens.secrets())
        if not failure.retryable:
            reason = disabled_reason(claim, failure, message)
            if not self.store.disable(claim, reason, now, trigger, failure.http_status, duration_ms):
                return "superseded", None
            log.warning("disabled the %s credential of provider key %d: %s", claim.provider_type,
                        claim.provider_key_id, reason)
            self.on_disabled(claim.provider_key_id, reason)
            return "disabled", None
        delay = self.backoff(claim.failures + 1, failure.retry_after)
        self.store.record_failure(claim, failure.outcome, message, now, now + dt.timedelta(seconds=delay), trigger,
                                  failure.http_status, duration_ms)
        log.info("refresh of provider key %d failed (%s), next attempt in %.1f s: %s", claim.provider_key_id,
                 failure.outcome, delay, message)
        return failure.outcome, delay

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `failures` consecutive failures: base x 2^(failures-1), capped at the maximum,
        times a jitter in [0.5, 1); never less than a 429's Retry-After."""
        s = self.infra.settings
        delay = min(s.oauth_backoff_seconds * 2 ** min(failures - 1, 60), s.oauth_backoff_max_seconds)
        delay *= 0.5 + self.jitter() / 2
        return max(delay, retry_after) if retry_after is not None else delay

    def lease(self) -> dt.timedelta:
        """How long a claim holds a credential."""
        # One attempt sends at most two requests (the second look at a non-retryable answer).
        return dt.timedelta(seconds=2 * self.infra.settings.oauth_timeout_seconds + 30)


def disabled_reason(claim: Claim, failure: RefreshFailed, message: str) -> str:
    """Why a credential is disabled, in words an operator can act on."""
    if claim.interrupted is not None and (failure.code in SPENT or failure.http_status == 401):
        owner, at = claim.interrupted
        return (f"refresh token already used: the rotated token was not saved (the refresh started by {owner} at "
                f"{at} stopped before it stored the provider's answer); sign in again and re-import. {message}")
    if failure.code == "refresh_token_reused":
        return (f"refresh token already used elsewhere (another copy of this login refreshed it); sign in again "
                f"and re-import. {message}")
    return f"refresh token rejected: {message}; sign in again and re-import"


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret in it replaced, for logs, history and answers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def owner() -> str:
    """host:pid:thread, naming who holds a lease or made an attempt."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
