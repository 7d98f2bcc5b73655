"""`engine.credentials`: provider credentials (OAuth accounts of the vendors' CLIs), kept fresh.

The refresh of one credential, start to end:
1. claim it (a lease in the control store: one process at a time, across processes);
2. spend its refresh token at the provider's token endpoint (one refresher per provider type);
3. store the answer with a compare-and-swap on the version it started from, before anything else;
4. tell the gateway (Redis Pub/Sub or webhook).
A retryable failure (network, timeout, 408, 429, 5xx, an unreadable 200) backs off exponentially with jitter,
within a run (`EZ_OAUTH_ATTEMPTS_PER_RUN`) and across runs (`next_attempt_at`, at most
`EZ_OAUTH_BACKOFF_MAX_SECONDS`; a 429's Retry-After is honoured). A non-retryable one (401, invalid_grant,
...) is checked again once, after re-reading the stored credential (providers have answered invalid_grant
during outages, and another process may have rotated it); then the credential and its provider key are
disabled with the reason, and listeners (the credential_invalid alert) are told.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Protocol

import httpx

from engine.credentials import files
from engine.credentials.events import RedisEvents
from engine.credentials.model import (
    PROVIDER_TYPES,
    AccessToken,
    Credential,
    CredentialList,
    ImportResult,
    RefreshAttempt,
    RefreshRequest,
    RefreshSummary,
    Tokens,
)
from engine.credentials.notify import Notifier
from engine.credentials.oauth import RefreshFailed
from engine.credentials.providers import lead_time, refreshers
from engine.credentials.queue import RefreshQueue
from engine.credentials.secretbox import SecretBox
from engine.credentials.store import Claim, CredentialStore
from engine.errors import Conflict, InvalidParameter, NotFound, SecretKeyError
from engine.infra import Infra
from engine.schedules import JobOutcome
from engine.times import as_utc

log = logging.getLogger(__name__)

#: A retry within a run waits at most this long; a longer backoff ends the run's attempts at that credential.
IN_RUN_SLEEP_MAX = 30.0
#: Error codes that say the refresh token was spent already (by us, if a refresh was interrupted).
SPENT = frozenset({"refresh_token_reused", "invalid_grant", "refresh_token_invalidated"})
#: Outcomes of attempts that will be tried again.
RETRYING = frozenset({"retryable", "rate_limited"})


class KeyStatus(Protocol):
    """Sets a provider key's status in the registry (`Registry.set_provider_key_status`)."""

    def __call__(self, provider_key_id: int, status: str, reason: str | None = None,
                 name: str | None = None) -> None: ...


#: Told `(provider_key_id, valid)` when a credential is disabled (False) or imported working again (True).
Listener = Callable[[int, bool], object]


class Credentials:
    """The credentials domain of one engine."""

    def __init__(self, infra: Infra, set_key_status: KeyStatus, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        """`sleep` waits between attempts of one run and `rng` draws the backoff jitter (tests inject both)."""
        self.infra = infra
        self.set_key_status = set_key_status
        self.sleep = sleep
        self.rng = rng or random.Random()
        settings = infra.settings
        self.refreshers = refreshers(settings)
        self.store = CredentialStore(infra.store, self._secret_box, self.lead)
        self.queue = RefreshQueue(infra.store)
        self.notifier = Notifier(settings)
        self.events = (RedisEvents(settings.redis_url, settings.redis_refresh_queue,
                                   infra.data_dir / "_locks" / "credentials-redis.lock")
                       if settings.redis_url else None)
        self._listeners: list[Listener] = []
        self._box: SecretBox | None = None
        self._lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None

    def on_change(self, listener: Listener) -> None:
        """Also call `listener(provider_key_id, valid)` when a credential is disabled or imported again."""
        self._listeners.append(listener)

    def lead(self, provider_type: str) -> dt.timedelta:
        """How long before expiry a credential of this type is refreshed."""
        return lead_time(self.infra.settings, provider_type)

    def _secret_box(self) -> SecretBox:
        with self._lock:
            if self._box is None:
                secret = self.infra.settings.secret_key
                self._box = SecretBox.open(secret.get_secret_value() if secret else None, self.infra.data_dir)
            return self._box

    # -- import -------------------------------------------------------------------------------

    def put(self, provider_key_id: int, provider_type: str, access_token: str, refresh_token: str,
            expires_at: dt.datetime, account_id: str | None = None, email: str | None = None,
            id_token: str | None = None, by: str = "admin") -> Credential:
        """Store a provider key's credential (created in the registry if absent) and enable it.

        Re-importing a working credential re-enables a disabled key and resolves its credential_invalid alert.

        Raises:
            InvalidParameter: an unknown provider type, an empty token, a non-positive id or a naive expiry.
        """
        if isinstance(provider_key_id, bool) or not isinstance(provider_key_id, int) or provider_key_id <= 0:
            raise InvalidParameter("provider_key_id must be a positive integer")
        if provider_type not in PROVIDER_TYPES:
            raise InvalidParameter(f"unknown provider_type {provider_type!r}; use {', '.join(PROVIDER_TYPES)}")
        if not access_token or not refresh_token:
            raise InvalidParameter("access_token and refresh_token must not be empty")
        tokens = Tokens(access_token=access_token, refresh_token=refresh_token, expires_at=as_utc(expires_at),
                        id_token=id_token or None, account_id=account_id or None, email=email or None)
        now = self.infra.now()
        self.store.put(provider_key_id, provider_type, tokens, now, by)
        self.set_key_status(provider_key_id, "active", None, name=email or account_id)
        for listener in self._listeners:
            listener(provider_key_id, True)
        credential = self.get(provider_key_id)
        self.notifier.changed(provider_key_id, provider_type, credential.version, now)
        return credential

    def import_file(self, path: Path, provider_key_id: int | None = None, provider_type: str | None = None,
                    by: str = "import") -> Credential:
        """Import one file the tools write (see `engine.credentials.files`).

        Without `provider_key_id`, the credential of the same provider type and account (id or email)
        (or, for files that name no account, the same refresh token) is replaced: re-importing a known account
        needs no id.

        Raises:
            InvalidParameter: unreadable, not a format we read, or no provider key id to store it under.
        """
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            # The parser's message can quote the file, which holds tokens: say only where it failed.
            where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise InvalidParameter(f"{path}: cannot read it as JSON ({where})") from None
        try:
            parsed = files.parse(document, provider_type, self.infra.now())
        except InvalidParameter as exc:
            raise InvalidParameter(f"{path}: {exc}") from None
        key = provider_key_id or self._same_account(parsed.provider_type, parsed.tokens)
        if key is None:
            raise InvalidParameter(f"{path}: a {parsed.format} of a new account: give the provider key to store it "
                                   f"under (ID={path})")
        t = parsed.tokens
        return self.put(key, parsed.provider_type, t.access_token, t.refresh_token, t.expires_at, t.account_id,
                        t.email, t.id_token, by=by)

    def import_files(self, paths: list[tuple[Path, int | None]], provider_type: str | None = None,
                     by: str = "import") -> ImportResult:
        """Import several files (each with its provider key id, or None to match the account); stops at the
        first file that fails, after storing the ones before it."""
        return ImportResult(credentials=[self.import_file(p, k, provider_type, by) for p, k in paths])

    def _same_account(self, provider_type: str, tokens: Tokens) -> int | None:
        for row in self.store.rows():
            if row["provider_type"] != provider_type:
                continue
            if (tokens.account_id and row["account_id"] == tokens.account_id) or (
                    tokens.email and row["email"] == tokens.email):
                return int(row["provider_key_id"])
            with contextlib.suppress(SecretKeyError):  # a file without identity (Claude Code's): the same token
                if self.store.tokens(row).refresh_token == tokens.refresh_token:
                    return int(row["provider_key_id"])
        return None

    # -- reading ------------------------------------------------------------------------------

    def list_all(self) -> CredentialList:
        """Every credential, secrets masked."""
        now = self.infra.now()
        return CredentialList(credentials=[self.store.credential(r, now) for r in self.store.rows()])

    def get(self, provider_key_id: int) -> Credential:
        """One credential, secrets masked. Raises NotFound."""
        return self.store.credential(self.store.row(provider_key_id), self.infra.now())

    def states(self) -> list[Credential]:
        """Every credential (the alert detector's credential source)."""
        return self.list_all().credentials

    def token(self, provider_key_id: int, actor: str) -> AccessToken:
        """The current access token, for the gateway; the read is recorded (who, when).

        Raises:
            NotFound: no credential. Conflict: it is disabled (its refresh token stopped working).
        """
        row = self.store.row(provider_key_id)
        if row["status"] == "disabled":
            raise Conflict(f"the credential of provider key {provider_key_id} is disabled: {row['reason']}")
        tokens = self.store.tokens(row)
        self.store.audit_read(provider_key_id, actor, row["version"], self.infra.now())
        return AccessToken(provider_key_id=provider_key_id, provider_type=row["provider_type"],
                           access_token=tokens.access_token, expires_at=tokens.expires_at, version=row["version"])

    def token_reads(self, provider_key_id: int) -> list[tuple[str, str, int]]:
        """The audit of a credential's token reads: (at, actor, version), oldest first."""
        return self.store.token_reads(provider_key_id)

    def attempts(self, provider_key_id: int | None = None, limit: int = 50) -> list[RefreshAttempt]:
        """The refresh history, newest first, of one credential (NotFound if it has none) or of all."""
        if provider_key_id is not None:
            self.store.row(provider_key_id)
        return self.store.attempts(provider_key_id, limit)

    def counts(self) -> dict[tuple[str, str], int]:
        """Attempts ever made, by (provider type, outcome): the /metrics counter."""
        return self.store.counts()

    # -- on demand ----------------------------------------------------------------------------

    def request_refresh(self, provider_key_id: int, source: str = "api", by: str = "admin",
                        wait: float = 10.0) -> RefreshRequest:
        """Queue a refresh of one credential now, and wait up to `wait` seconds for its outcome.

        The request is durable: if this process stops, the next refresh job run does it. Answers the request,
        `done` with its outcome, or `queued`/`running` (poll `get_request`).

        Raises:
            NotFound: no credential. Conflict: it is disabled (import a working one).
        """
        row = self.store.row(provider_key_id)
        if row["status"] == "disabled":
            raise Conflict(f"the credential of provider key {provider_key_id} is disabled ({row['reason']}); "
                           "import a working one to enable it again")
        request_id = self.queue.enqueue(provider_key_id, source, by, self.infra.now())
        if wait > 0:
            future = self._pool().submit(self.run_request, request_id)
            with contextlib.suppress(FutureTimeout):  # still running: the caller polls
                future.result(timeout=wait)
        return self.get_request(request_id)

    def get_request(self, request_id: int) -> RefreshRequest:
        """One on-demand refresh request, with the credential once it is done. Raises NotFound."""
        request = self.queue.get(request_id)
        if request.state != "done":
            return request
        try:
            return request.model_copy(update={"credential": self.get(request.provider_key_id)})
        except NotFound:
            return request

    def run_request(self, request_id: int) -> str | None:
        """Do one queued request (if no other worker has it); its outcome, or None when it was not ours."""
        settings = self.infra.settings
        lease = dt.timedelta(seconds=settings.oauth_attempts_per_run * (self._lease().total_seconds()
                                                                        + IN_RUN_SLEEP_MAX))
        provider_key_id = self.queue.claim(request_id, _owner(), self.infra.now(), lease)
        if provider_key_id is None:
            return None
        error = None
        try:
            outcome = self._requested(provider_key_id, deadline=time.monotonic() + lease.total_seconds())
            if outcome != "refreshed":
                error = self._last_error(provider_key_id)
        except Exception as exc:
            log.exception("refresh request %d failed", request_id)
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        self.queue.finish(request_id, outcome, error, self.infra.now())
        return outcome

    def _requested(self, provider_key_id: int, deadline: float) -> str:
        """Refresh now; when another process is refreshing it right now, its result is this request's."""
        try:
            start = self.store.row(provider_key_id)["version"]
        except NotFound:
            return "not_found"
        while True:
            outcome = self._refresh(provider_key_id, None, "request")
            if outcome != "busy" or time.monotonic() > deadline:
                return outcome
            time.sleep(0.2)
            row = self.store.row(provider_key_id)
            if row["version"] != start:
                return "refreshed"

    def _last_error(self, provider_key_id: int) -> str | None:
        try:
            row = self.store.row(provider_key_id)
        except NotFound:
            return None
        return row["reason"] or row["last_error"]

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(self.infra.settings.oauth_concurrency,
                                                   thread_name_prefix="ezstats-refresh")
            return self._workers

    # -- the job ------------------------------------------------------------------------------

    def refresh_due(self, now: dt.datetime | None = None) -> RefreshSummary:
        """The `token_refresh` job: take the gateway's Redis events, do the queued requests, then refresh every
        credential that is due, `EZ_OAUTH_CONCURRENCY` at a time."""
        now = as_utc(now or self.infra.now())
        events = self.events.drain(self._enqueue_event) if self.events is not None else 0
        requests = self.queue.pending(now)
        requested = {self.queue.get(r).provider_key_id for r in requests}
        due = [d for d in self.store.due(now) if d.provider_key_id not in requested]
        outcomes: Counter[str] = Counter()
        with ThreadPoolExecutor(self.infra.settings.oauth_concurrency, thread_name_prefix="ezstats-refresh") as pool:
            futures = [pool.submit(self.run_request, r) for r in requests]
            futures += [pool.submit(self._refresh, d.provider_key_id, d.version, "schedule") for d in due]
            for future in futures:
                outcome = future.result()
                if outcome is not None:
                    outcomes[outcome] += 1
        self.queue.prune(now - dt.timedelta(days=self.infra.settings.job_runs_retention_days))
        return RefreshSummary(
            due=len(due), requests=len(requests), refreshed=outcomes["refreshed"],
            retried=sum(outcomes[o] for o in RETRYING), disabled=outcomes["disabled"],
            skipped=outcomes["busy"] + outcomes["superseded"] + outcomes["inactive"], redis_events=events)

    def run(self, now: dt.datetime) -> JobOutcome:
        """`refresh_due` as a job run: rows = credentials refreshed; the message and details say how many were
        refreshed, retried and disabled."""
        summary = self.refresh_due(now)
        return JobOutcome(rows=summary.refreshed, message=str(summary), details=summary.model_dump())

    def forget_deleted(self, con: sqlite3.Connection, section: str, entity_id: int) -> None:
        """A registry deletion hook (`Registry.on_delete`): a deleted provider key's credential (its secrets)
        is deleted with it; its history stays."""
        if section == "provider_keys":
            self.store.delete_in(con, entity_id)

    def _enqueue_event(self, provider_key_id: int) -> None:
        self.queue.enqueue(provider_key_id, "redis", "gateway", self.infra.now())

    def refresh(self, provider_key_id: int, trigger: str = "manual") -> str:
        """Refresh one credential now, here, whether due or not (no queue); its outcome: refreshed, retryable,
        rate_limited, disabled, superseded, busy (another process is at it) or inactive (disabled before).

        Raises:
            NotFound: no credential.
        """
        self.store.row(provider_key_id)
        return self._refresh(provider_key_id, None, trigger)

    def _refresh(self, provider_key_id: int, version: int | None, trigger: str) -> str:
        """Up to EZ_OAUTH_ATTEMPTS_PER_RUN attempts, backing off in between, while they fail retryably."""
        owner = _owner()
        attempts = self.infra.settings.oauth_attempts_per_run
        outcome = "busy"
        for attempt in range(1, attempts + 1):
            claim = self.store.claim(provider_key_id, version, owner, self.infra.now(), self._lease(), trigger)
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
            self.set_key_status(claim.provider_key_id, "disabled", reason)
            for listener in self._listeners:
                listener(claim.provider_key_id, False)
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
        delay *= 0.5 + self.rng.random() / 2
        return max(delay, retry_after) if retry_after is not None else delay

    def _lease(self) -> dt.timedelta:
        # One attempt sends at most two requests (the second look at a non-retryable answer).
        return dt.timedelta(seconds=2 * self.infra.settings.oauth_timeout_seconds + 30)

    # -- keys ---------------------------------------------------------------------------------

    def rotate_key(self, new_key: bool = False) -> int:
        """Re-encrypt every stored secret with the first key in force; with `new_key`, first put a new key at
        the head of `<data>/secret.key`. Returns how many credentials were rewritten.

        Raises:
            InvalidParameter: `new_key` while the keys come from EZ_SECRET_KEY.
            SecretKeyError: a stored secret no configured key decrypts.
        """
        if new_key:
            self._secret_box().add_key()
        return self.store.reencrypt()


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


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
