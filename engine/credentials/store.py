"""The credentials tables: tokens encrypted at rest, the single-flight lease, the CAS store, the history.

Invariants kept by SQL rather than by callers:
- a refresh is claimed with a lease (`lease_until`) in one write transaction, so of all processes on one
  `ezstats.db` one at a time holds a credential's refresh token;
- new tokens are stored with a compare-and-swap on `version` (the version the refresh started from), so
  an answer about a refresh token that an import or another process replaced meanwhile never overwrites;
- `inflight_*` is set while a refresh token is out at the provider and cleared with its outcome: a row that
  still has it when claimed again belongs to a process that died mid-refresh (reported, never guessed).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from engine.credentials.model import Credential, RefreshAttempt, Tokens
from engine.errors import NotFound, SecretKeyError
from engine.secretbox import SecretBox
from engine.store import ControlStore
from engine.times import iso, parse_iso

#: The lead time of a provider type (how long before expiry it is refreshed).
LeadTime = Callable[[str], dt.timedelta]


@dataclass(frozen=True)
class Claim:
    """A credential claimed for one refresh: its tokens in clear, the version they belong to, and what a
    previous holder left behind if it died mid-refresh (`interrupted`: owner and time)."""

    provider_key_id: int
    provider_type: str
    version: int
    owner: str
    tokens: Tokens
    interrupted: tuple[str, str] | None
    failures: int


@dataclass(frozen=True)
class Due:
    """A credential due for refresh, and the version that was due."""

    provider_key_id: int
    version: int


class CredentialStore:
    """Owner of `credentials`, `credential_attempts`, `credential_refresh_counts` and `credential_token_reads`."""

    def __init__(self, store: ControlStore, box: Callable[[], SecretBox], lead: LeadTime) -> None:
        self.store = store
        self._box = box
        self.lead = lead

    @property
    def box(self) -> SecretBox:
        """The secret box (opened on first use, so a data dir without credentials gets no key file)."""
        return self._box()

    # -- writes -------------------------------------------------------------------------------

    def put(self, provider_key_id: int, provider_type: str, tokens: Tokens, now: dt.datetime, by: str) -> None:
        """Store (or replace) a credential as imported: active, no failures, a new version; any refresh in
        flight for the old tokens will find its version gone."""
        box, stamp = self.box, iso(now)
        with self.store.connect() as con:
            con.execute(
                """
                INSERT INTO credentials (provider_key_id, provider_type, access_token, refresh_token, id_token,
                    expires_at, account_id, email, status, version, imported_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', 1, ?, ?)
                ON CONFLICT (provider_key_id) DO UPDATE SET provider_type = excluded.provider_type,
                    access_token = excluded.access_token, refresh_token = excluded.refresh_token,
                    id_token = excluded.id_token, expires_at = excluded.expires_at,
                    account_id = excluded.account_id, email = excluded.email, status = 'active', reason = NULL,
                    version = credentials.version + 1, lease_owner = NULL, lease_until = NULL,
                    inflight_owner = NULL, inflight_at = NULL, last_error = NULL, failures = 0,
                    next_attempt_at = NULL, imported_at = excluded.imported_at, updated_at = excluded.updated_at
                """,
                (provider_key_id, provider_type, box.encrypt(tokens.access_token), box.encrypt(tokens.refresh_token),
                 box.encrypt(tokens.id_token) if tokens.id_token else None, iso(tokens.expires_at),
                 tokens.account_id, tokens.email, stamp, stamp),
            )
            _attempt(con, provider_key_id, provider_type, stamp, "import", "imported", owner=by,
                     expires_at=iso(tokens.expires_at))

    def claim(self, provider_key_id: int, version: int | None, owner: str, now: dt.datetime,
              lease: dt.timedelta, trigger: str) -> Claim | None:
        """Take the refresh of a credential for `lease`, if it is still at `version` (None: any), not disabled and
        not held by a live lease. None when it is not this caller's to refresh."""
        stamp = iso(now)
        with self.store.connect() as con:
            row = con.execute("SELECT * FROM credentials WHERE provider_key_id = ?", (provider_key_id,)).fetchone()
            if row is None or row["status"] == "disabled" or (version is not None and row["version"] != version):
                return None
            if row["lease_until"] is not None and row["lease_until"] > stamp:
                return None
            interrupted = None
            if row["inflight_at"] is not None:
                interrupted = (row["inflight_owner"], row["inflight_at"])
                _attempt(con, provider_key_id, row["provider_type"], stamp, trigger, "interrupted", owner=owner,
                         error=f"the refresh started by {interrupted[0]} at {interrupted[1]} stopped before it "
                         "stored the provider's answer")
                _count(con, row["provider_type"], "interrupted")
            con.execute(
                "UPDATE credentials SET status = 'refreshing', lease_owner = ?, lease_until = ?, inflight_owner = ?,"
                " inflight_at = ? WHERE provider_key_id = ?",
                (owner, iso(now + lease), owner, stamp, provider_key_id))
            tokens = self._tokens(row)
        return Claim(provider_key_id, row["provider_type"], row["version"], owner, tokens, interrupted,
                     row["failures"])

    def store_refreshed(self, claim: Claim, tokens: Tokens, now: dt.datetime, trigger: str, http_status: int,
                        duration_ms: float) -> int | None:
        """Store new tokens if the credential is still at the claim's version (compare-and-swap); the new
        version, or None when an import or another process changed it meanwhile."""
        box, stamp = self.box, iso(now)
        with self.store.connect() as con:
            row = con.execute(
                """
                UPDATE credentials SET access_token = ?, refresh_token = ?, id_token = ?, expires_at = ?,
                    account_id = coalesce(?, account_id), email = coalesce(?, email), version = version + 1,
                    status = 'active', reason = NULL, lease_owner = NULL, lease_until = NULL, inflight_owner = NULL,
                    inflight_at = NULL, last_refresh_at = ?, last_attempt_at = ?, last_outcome = 'refreshed',
                    last_error = NULL, failures = 0, next_attempt_at = NULL, updated_at = ?
                WHERE provider_key_id = ? AND version = ? RETURNING version
                """,
                (box.encrypt(tokens.access_token), box.encrypt(tokens.refresh_token),
                 box.encrypt(tokens.id_token) if tokens.id_token else None, iso(tokens.expires_at), tokens.account_id,
                 tokens.email, stamp, stamp, stamp, claim.provider_key_id, claim.version),
            ).fetchone()
            outcome = "refreshed" if row is not None else "superseded"
            if row is None:
                con.execute("UPDATE credentials SET lease_owner = NULL, lease_until = NULL,"
                            " status = CASE WHEN status = 'refreshing' THEN 'active' ELSE status END"
                            " WHERE provider_key_id = ? AND lease_owner = ?", (claim.provider_key_id, claim.owner))
            _attempt(con, claim.provider_key_id, claim.provider_type, stamp, trigger, outcome, owner=claim.owner,
                     http_status=http_status, duration_ms=duration_ms, expires_at=iso(tokens.expires_at),
                     error=None if row else "the credential changed while this refresh was out; its answer was "
                     "dropped")
            _count(con, claim.provider_type, outcome)
        return None if row is None else int(row["version"])

    def record_failure(self, claim: Claim, outcome: str, error: str, now: dt.datetime, next_attempt: dt.datetime,
                       trigger: str, http_status: int | None, duration_ms: float) -> int:
        """A retryable failure: the credential stays active and waits until `next_attempt`; returns its
        consecutive failures."""
        stamp = iso(now)
        with self.store.connect() as con:
            row = con.execute(
                "UPDATE credentials SET status = 'active', lease_owner = NULL, lease_until = NULL,"
                " inflight_owner = NULL, inflight_at = NULL, last_attempt_at = ?, last_outcome = ?, last_error = ?,"
                " failures = failures + 1, next_attempt_at = ?, updated_at = ?"
                " WHERE provider_key_id = ? AND version = ? AND lease_owner = ? RETURNING failures",
                (stamp, outcome, error, iso(next_attempt), stamp, claim.provider_key_id, claim.version, claim.owner),
            ).fetchone()
            _attempt(con, claim.provider_key_id, claim.provider_type, stamp, trigger, outcome, owner=claim.owner,
                     http_status=http_status, error=error, duration_ms=duration_ms)
            _count(con, claim.provider_type, outcome)
        return int(row["failures"]) if row else 0

    def disable(self, claim: Claim, reason: str, now: dt.datetime, trigger: str, http_status: int | None,
                duration_ms: float) -> bool:
        """A refresh token that stopped working: the credential is disabled with `reason` (unless it changed
        meanwhile); whether it was."""
        stamp = iso(now)
        with self.store.connect() as con:
            changed = con.execute(
                "UPDATE credentials SET status = 'disabled', reason = ?, lease_owner = NULL, lease_until = NULL,"
                " inflight_owner = NULL, inflight_at = NULL, last_attempt_at = ?, last_outcome = 'disabled',"
                " last_error = ?, failures = failures + 1, next_attempt_at = NULL, updated_at = ?"
                " WHERE provider_key_id = ? AND version = ?",
                (reason, stamp, reason, stamp, claim.provider_key_id, claim.version),
            ).rowcount
            outcome = "disabled" if changed else "superseded"
            _attempt(con, claim.provider_key_id, claim.provider_type, stamp, trigger, outcome, owner=claim.owner,
                     http_status=http_status, error=reason, duration_ms=duration_ms)
            _count(con, claim.provider_type, outcome)
        return bool(changed)

    def release(self, claim: Claim, now: dt.datetime, trigger: str, outcome: str, error: str | None) -> None:
        """Give a claim back without a result (the credential changed meanwhile, or the attempt broke)."""
        stamp = iso(now)
        with self.store.connect() as con:
            con.execute(
                "UPDATE credentials SET status = CASE WHEN status = 'refreshing' THEN 'active' ELSE status END,"
                " lease_owner = NULL, lease_until = NULL, inflight_owner = NULL, inflight_at = NULL"
                " WHERE provider_key_id = ? AND lease_owner = ?", (claim.provider_key_id, claim.owner))
            _attempt(con, claim.provider_key_id, claim.provider_type, stamp, trigger, outcome, owner=claim.owner,
                     error=error)
            _count(con, claim.provider_type, outcome)

    @staticmethod
    def delete_in(con: sqlite3.Connection, provider_key_id: int) -> None:
        """Delete a credential inside the caller's transaction (its provider key is being deleted)."""
        con.execute("DELETE FROM credentials WHERE provider_key_id = ?", (provider_key_id,))

    def audit_read(self, provider_key_id: int, actor: str, version: int, now: dt.datetime) -> None:
        """Record who read a credential's access token, and when."""
        with self.store.connect() as con:
            con.execute("INSERT INTO credential_token_reads (provider_key_id, at, actor, version) VALUES (?, ?, ?, ?)",
                        (provider_key_id, iso(now), actor, version))

    def reencrypt(self) -> int:
        """Encrypt every stored secret with the first key; returns how many credentials were rewritten."""
        box = self.box
        with self.store.connect() as con:
            rows = con.execute(
                "SELECT provider_key_id, access_token, refresh_token, id_token FROM credentials").fetchall()
            for row in rows:
                con.execute(
                    "UPDATE credentials SET access_token = ?, refresh_token = ?, id_token = ?"
                    " WHERE provider_key_id = ?",
                    (box.rotate(row["access_token"]), box.rotate(row["refresh_token"]),
                     box.rotate(row["id_token"]) if row["id_token"] else None, row["provider_key_id"]))
        return len(rows)

    # -- reads --------------------------------------------------------------------------------

    def row(self, provider_key_id: int) -> sqlite3.Row:
        """The stored row of a credential. Raises NotFound."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM credentials WHERE provider_key_id = ?", (provider_key_id,)).fetchone()
        if row is None:
            raise NotFound(f"provider key {provider_key_id} has no credential; import one first")
        return row  # type: ignore[no-any-return]

    def rows(self) -> list[sqlite3.Row]:
        """Every stored row, by provider key id."""
        with self.store.connect(write=False) as con:
            return con.execute("SELECT * FROM credentials ORDER BY provider_key_id").fetchall()

    def tokens(self, row: sqlite3.Row) -> Tokens:
        """A row's tokens in clear. Raises SecretKeyError when the keys in force cannot decrypt them."""
        return self._tokens(row)

    def due(self, now: dt.datetime) -> list[Due]:
        """Active credentials whose expiry minus lead time has passed, whose backoff is over and that no live
        lease holds, soonest expiry first."""
        stamp = iso(now)
        found = []
        for row in self.rows():
            if row["status"] == "disabled" or (row["lease_until"] and row["lease_until"] > stamp):
                continue
            if row["next_attempt_at"] and row["next_attempt_at"] > stamp:
                continue
            if _instant(row["expires_at"]) - self.lead(row["provider_type"]) <= now:
                found.append((row["expires_at"], Due(row["provider_key_id"], row["version"])))
        return [d for _, d in sorted(found, key=lambda pair: pair[0])]

    def credential(self, row: sqlite3.Row, now: dt.datetime) -> Credential:
        """The answer of a row: status as of `now`, secrets masked."""
        try:
            tokens: Tokens | None = self._tokens(row)
        except SecretKeyError:
            tokens = None
        status = row["status"]
        if status == "refreshing" and (row["lease_until"] is None or row["lease_until"] <= iso(now)):
            status = "active"  # the lease of a process that died: claimable again
        expires = _instant(row["expires_at"])
        return Credential(
            provider_key_id=row["provider_key_id"], provider_type=row["provider_type"], status=status,
            reason=row["reason"], account_id=row["account_id"], email=row["email"], expires_at=expires,
            refresh_due_at=expires - self.lead(row["provider_type"]), last_refresh_at=parse_iso(row["last_refresh_at"]),
            last_attempt_at=parse_iso(row["last_attempt_at"]), last_outcome=row["last_outcome"],
            last_error=row["last_error"], failures=row["failures"], next_attempt_at=parse_iso(row["next_attempt_at"]),
            version=row["version"], access_token_hint=mask(tokens.access_token if tokens else None),
            refresh_token_hint=mask(tokens.refresh_token if tokens else None),
            imported_at=_instant(row["imported_at"]), updated_at=_instant(row["updated_at"]),
        )

    def attempts(self, provider_key_id: int | None, limit: int) -> list[RefreshAttempt]:
        """The latest attempts, newest first, of one credential or of all."""
        with self.store.connect(write=False) as con:
            rows = con.execute(
                "SELECT * FROM credential_attempts WHERE ? IS NULL OR provider_key_id = ? ORDER BY id DESC LIMIT ?",
                (provider_key_id, provider_key_id, limit)).fetchall()
        return [RefreshAttempt.model_validate(dict(r)) for r in rows]

    def token_reads(self, provider_key_id: int) -> list[tuple[str, str, int]]:
        """(at, actor, version) of every audited read of a credential's access token, oldest first."""
        with self.store.connect(write=False) as con:
            return [(r["at"], r["actor"], r["version"]) for r in con.execute(
                "SELECT at, actor, version FROM credential_token_reads WHERE provider_key_id = ? ORDER BY id",
                (provider_key_id,))]

    def counts(self) -> dict[tuple[str, str], int]:
        """Attempts ever made by (provider type, outcome): monotonic, for /metrics."""
        with self.store.connect(write=False) as con:
            return {(r["provider_type"], r["outcome"]): r["count"]
                    for r in con.execute("SELECT * FROM credential_refresh_counts")}

    def _tokens(self, row: sqlite3.Row) -> Tokens:
        box = self.box
        return Tokens(access_token=box.decrypt(row["access_token"]), refresh_token=box.decrypt(row["refresh_token"]),
                      id_token=box.decrypt(row["id_token"]) if row["id_token"] else None,
                      expires_at=_instant(row["expires_at"]), account_id=row["account_id"], email=row["email"])


def mask(secret: str | None) -> str:
    """A secret as lists show it: its last 4 characters only when it is long enough that they give nothing away."""
    if not secret:
        return ""
    return "…" + secret[-4:] if len(secret) >= 24 else "…"


def _instant(text: str) -> dt.datetime:
    moment = parse_iso(text)
    assert moment is not None
    return moment


def _attempt(con: sqlite3.Connection, provider_key_id: int, provider_type: str, at: str, trigger: str, outcome: str,
             owner: str, http_status: int | None = None, error: str | None = None, duration_ms: float | None = None,
             expires_at: str | None = None) -> None:
    con.execute(
        "INSERT INTO credential_attempts (provider_key_id, provider_type, at, trigger, outcome, http_status, error,"
        " duration_ms, expires_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (provider_key_id, provider_type, at, trigger, outcome, http_status, error,
         None if duration_ms is None else round(duration_ms, 2), expires_at, owner))


def _count(con: sqlite3.Connection, provider_type: str, outcome: str) -> None:
    con.execute("INSERT INTO credential_refresh_counts (provider_type, outcome, count) VALUES (?, ?, 1)"
                " ON CONFLICT (provider_type, outcome) DO UPDATE SET count = credential_refresh_counts.count + 1",
                (provider_type, outcome))
