"""Leases: named locks with an expiry in the shared control store, for work that must not overlap across hosts.

An flock only excludes processes of one host. With the control store on PostgreSQL, replicas on several
hosts coordinate through the `leases` table instead:

- taking a lease is one conditional upsert (insert, or take over a row whose `expires_at` has passed), so
  of two replicas racing for it exactly one gets it, whatever the timing (the store serializes writes);
- the holder renews it every third of its duration from a background thread while the work runs, and
  deletes it when done;
- a holder that dies stops renewing: the lease expires and the next replica takes it (a job's record still
  `running` is then marked `abandoned`, as after a crash under an flock).

Expiries are read on each host's wall clock (not the engine's, which tests and replays set): hosts keep
their clocks in sync (NTP) to well within a lease's duration.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from engine.store import ControlStore
from engine.times import iso, utc_now

log = logging.getLogger(__name__)

#: How often a waiting taker asks again.
POLL_SECONDS = 0.2


class Leases:
    """The `leases` table (owner: this module)."""

    def __init__(self, store: ControlStore, seconds: float) -> None:
        self.store = store
        self.seconds = seconds

    @contextmanager
    def hold(self, name: str, wait: bool = False) -> Iterator[bool]:
        """Hold the lease `name` for the block, renewing it meanwhile; like `engine.locks.flock`, the block
        is given False (and runs at once) when another holder has it and `wait` is False."""
        while (held := self.acquire(name)) is None:
            if not wait:
                yield False
                return
            time.sleep(POLL_SECONDS)
        try:
            yield True
        finally:
            held.release()

    def acquire(self, name: str) -> Held | None:
        """Take the lease `name` now and keep it (renewed) until `release()` is called on the answer; None when
        another holder has it."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}:{uuid.uuid4().hex[:8]}"
        return Held(self, name, owner) if self.take(name, owner) else None

    def take(self, name: str, owner: str) -> bool:
        """Take the lease if it is free or expired; whether `owner` holds it now."""
        now = utc_now()
        with self.store.connect() as con:
            row = con.execute(
                "INSERT INTO leases (name, owner, expires_at, acquired_at, renewed_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,"
                " acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at"
                " WHERE leases.expires_at <= ? RETURNING owner",
                (name, owner, iso(self._until(now)), iso(now), iso(now), iso(now))).fetchone()
        return row is not None

    def renew(self, name: str, owner: str) -> bool:
        """Push the lease's expiry forward; False when `owner` no longer holds it (it expired and was taken)."""
        now = utc_now()
        with self.store.connect() as con:
            return con.execute("UPDATE leases SET expires_at = ?, renewed_at = ? WHERE name = ? AND owner = ?"
                               " RETURNING name", (iso(self._until(now)), iso(now), name, owner)).fetchone() is not None

    def release(self, name: str, owner: str) -> None:
        """Give the lease up (nothing if `owner` no longer holds it)."""
        with self.store.connect() as con:
            con.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    def holder(self, name: str) -> str | None:
        """Who holds the lease now (None: free or expired)."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT owner, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
        return row["owner"] if row is not None and row["expires_at"] > iso(utc_now()) else None

    def _until(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.seconds)


class Held:
    """A lease this process holds: renewed from a background thread until `release()`."""

    def __init__(self, leases: Leases, name: str, owner: str) -> None:
        self.leases, self.name, self.owner = leases, name, owner
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._renew, daemon=True, name=f"lease-{name}")
        self._beat.start()

    def release(self) -> None:
        """Stop renewing and give the lease up."""
        self._stop.set()
        self._beat.join()
        self.leases.release(self.name, self.owner)

    def _renew(self) -> None:
        while not self._stop.wait(self.leases.seconds / 3):
            try:
                if not self.leases.renew(self.name, self.owner):
                    log.error("lost the lease %s (held past its expiry without renewal): another holder may run",
                              self.name)
                    return
            except Exception:  # the store is unreachable: retry until the lease would run out
                log.exception("could not renew the lease %s; retrying", self.name)
