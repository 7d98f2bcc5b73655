"""`engine.credentials`: provider credentials (OAuth accounts of the vendors' CLIs), kept fresh.

`Credentials` is the use cases (import, list, token, on-demand and scheduled refresh, key rotation); the
refresh of one credential is `refreshing.Refreshing`, the tables `store.CredentialStore` and `queue.RefreshQueue`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Protocol

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
from engine.credentials.providers import lead_time, refreshers
from engine.credentials.queue import RefreshQueue
from engine.credentials.refreshing import IN_RUN_SLEEP_MAX, RETRYING, Refreshing, owner
from engine.credentials.store import CredentialStore
from engine.errors import Conflict, InvalidParameter, NotFound, SecretKeyError
from engine.infra import Infra
from engine.schedules import JobOutcome
from engine.times import as_utc, check_id, check_instant

log = logging.getLogger(__name__)

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
        self.store = CredentialStore(infra.store, self.infra.secret_box, self.lead)
        self.queue = RefreshQueue(infra.store)
        self.notifier = Notifier(settings)
        self.refreshing = Refreshing(infra, self.store, self.refreshers, self.notifier,
                                     sleep=lambda seconds: self.sleep(seconds), jitter=lambda: self.rng.random(),
                                     on_disabled=self._disabled)
        self.events = (RedisEvents(settings.redis_url, settings.redis_refresh_queue,
                                   lambda: infra.exclusive("credentials-redis",
                                                           infra.data_dir / "_locks" / "credentials-redis.lock"))
                       if settings.redis_url else None)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None

    def on_change(self, listener: Listener) -> None:
        """Also call `listener(provider_key_id, valid)` when a credential is disabled or imported again."""
        self._listeners.append(listener)

    def lead(self, provider_type: str) -> dt.timedelta:
        """How long before expiry a credential of this type is refreshed."""
        return lead_time(self.infra.settings, provider_type)

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
        check_id(provider_key_id, "provider_key_id")
        if provider_type not in PROVIDER_TYPES:
            raise InvalidParameter(f"unknown provider_type {provider_type!r}; use {', '.join(PROVIDER_TYPES)}")
        if not access_token or not refresh_token:
            raise InvalidParameter("access_token and refresh_token must not be empty")
        tokens = Tokens(access_token=access_token, refresh_token=refresh_token,
                        expires_at=check_instant(expires_at, "expires_at"),
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
        lease = dt.timedelta(seconds=settings.oauth_attempts_per_run * (self.refreshing.lease().total_seconds()
                                                                        + IN_RUN_SLEEP_MAX))
        provider_key_id = self.queue.claim(request_id, owner(), self.infra.now(), lease)
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
            outcome = self.refreshing.refresh(provider_key_id, None, "request")
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
            futures += [pool.submit(self.refreshing.refresh, d.provider_key_id, d.version, "schedule") for d in due]
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
        return self.refreshing.refresh(provider_key_id, None, trigger)

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `failures` consecutive failures (see `Refreshing.backoff`)."""
        return self.refreshing.backoff(failures, retry_after)

    def _disabled(self, provider_key_id: int, reason: str) -> None:
        self.set_key_status(provider_key_id, "disabled", reason)
        for listener in self._listeners:
            listener(provider_key_id, False)

    # -- keys ---------------------------------------------------------------------------------

    def reencrypt(self) -> int:
        """Re-encrypt every stored credential with the first key in force; returns how many were rewritten.

        Raises:
            SecretKeyError: a stored secret no configured key decrypts.
        """
        return self.store.reencrypt()
