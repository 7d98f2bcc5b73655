"""The durable queue of on-demand refreshes (API, CLI, Redis events), in the control store.

A request is `queued`, then `running` under a claim with a deadline, then `done` with its outcome. A
worker that dies leaves its request `running` past the deadline, and the next worker takes it again, so
nothing asked for is lost; two requests for one credential waiting at once are the same request.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from engine.credentials.model import RefreshRequest
from engine.errors import NotFound
from engine.store import ControlStore
from engine.times import iso


class RefreshQueue:
    """Owner of `credential_refresh_requests`."""

    def __init__(self, store: ControlStore) -> None:
        self.store = store

    def enqueue(self, provider_key_id: int, source: str, by: str, now: dt.datetime) -> int:
        """Queue a refresh of one credential; the id of the request (an already queued one for it is reused)."""
        with self.store.connect() as con:
            row = con.execute(
                "SELECT id FROM credential_refresh_requests WHERE provider_key_id = ? AND state = 'queued'"
                " ORDER BY id LIMIT 1", (provider_key_id,)).fetchone()
            if row is not None:
                return int(row["id"])
            row = con.execute(
                "INSERT INTO credential_refresh_requests (provider_key_id, source, requested_by, requested_at, state)"
                " VALUES (?, ?, ?, ?, 'queued') RETURNING id", (provider_key_id, source, by, iso(now))).fetchone()
            return int(row["id"])

    def claim(self, request_id: int, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        """Take one request if it is queued or its worker's claim ran out; its provider key id, or None."""
        stamp = iso(now)
        with self.store.connect() as con:
            row = con.execute(
                "UPDATE credential_refresh_requests SET state = 'running', claimed_by = ?, claimed_until = ?"
                " WHERE id = ? AND (state = 'queued' OR (state = 'running' AND claimed_until < ?))"
                " RETURNING provider_key_id", (owner, iso(now + lease), request_id, stamp)).fetchone()
        return None if row is None else int(row["provider_key_id"])

    def pending(self, now: dt.datetime) -> list[int]:
        """Ids of requests waiting for a worker (queued, or running with a dead worker), oldest first."""
        with self.store.connect(write=False) as con:
            return [r["id"] for r in con.execute(
                "SELECT id FROM credential_refresh_requests WHERE state = 'queued'"
                " OR (state = 'running' AND claimed_until < ?) ORDER BY id", (iso(now),))]

    def finish(self, request_id: int, outcome: str, error: str | None, now: dt.datetime) -> None:
        """Record a request's outcome."""
        with self.store.connect() as con:
            con.execute(
                "UPDATE credential_refresh_requests SET state = 'done', finished_at = ?, outcome = ?, error = ?,"
                " claimed_until = NULL WHERE id = ?", (iso(now), outcome, error, request_id))

    def get(self, request_id: int) -> RefreshRequest:
        """One request. Raises NotFound."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM credential_refresh_requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise NotFound(f"no refresh request {request_id}")
        return _request(row)

    def prune(self, before: dt.datetime) -> int:
        """Forget finished requests older than `before`."""
        with self.store.connect() as con:
            return con.execute("DELETE FROM credential_refresh_requests WHERE state = 'done' AND finished_at < ?",
                               (iso(before),)).rowcount


def _request(row: sqlite3.Row) -> RefreshRequest:
    return RefreshRequest.model_validate({k: row[k] for k in (
        "id", "provider_key_id", "source", "requested_by", "requested_at", "state", "finished_at", "outcome",
        "error")})
