"""The shared infrastructure every subsystem takes: settings, clock, control store, lake, DuckDB connections."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from engine import catalog
from engine.lake import Lake
from engine.leases import Leases
from engine.locks import flock, try_lock
from engine.manifest import Manifest
from engine.objectlake import ObjectLake
from engine.postgres import PostgresStore
from engine.secretbox import SecretBox
from engine.settings import Settings
from engine.storage import open_storage
from engine.store import ControlStore
from engine.times import Clock

log = logging.getLogger(__name__)


@dataclass
class Infra:
    """What the subsystems share; built once by the `Engine` (the composition root) and passed down.

    The clock is read at each use (`now()`), never captured, so replacing it (tests, replays) reaches
    every subsystem.
    """

    settings: Settings
    clock: Clock
    store: ControlStore
    lake: Lake
    _box: SecretBox | None = field(default=None, init=False, repr=False)
    _box_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, clock: Clock) -> Infra:
        """Create the data dir, open (and migrate) the control store (EZ_CONTROL_URL, else the SQLite file) and
        the lake writer."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.control_url
        store = PostgresStore(url.get_secret_value()) if url else ControlStore(settings.control_db)
        storage = open_storage(settings.lake_url, settings.data_dir, settings.s3_endpoint_url)
        objects = ObjectLake(storage, Manifest(store)) if storage.remote else None
        return cls(settings, clock, store, Lake(settings, store, objects))

    @property
    def data_dir(self) -> Path:
        """Root of the lake and of the control store."""
        return self.settings.data_dir

    def exclusive(self, name: str, path: Path, wait: bool = False) -> AbstractContextManager[bool]:
        """One holder at a time across every process on the data, like `engine.locks.flock`: an flock on `path`
        with the SQLite store (one host), a lease named `name` in a shared control store (replicas on
        several hosts; see `engine.leases`). With `wait` False the block gets False when it is held elsewhere."""
        if self.store.shared:
            return Leases(self.store, self.settings.lease_seconds).hold(name, wait)
        return flock(path, wait)

    def claim(self, name: str, path: Path) -> Callable[[], None] | None:
        """Take, without waiting, what `exclusive(name, path)` guards and keep it past the call: the function that
        releases it, or None when it is held elsewhere."""
        if self.store.shared:
            held = Leases(self.store, self.settings.lease_seconds).acquire(name)
            return held.release if held is not None else None
        fd = try_lock(path)
        return None if fd is None else functools.partial(os.close, fd)

    def now(self) -> dt.datetime:
        """The current instant by the engine's clock."""
        return self.clock()

    def secret_box(self) -> SecretBox:
        """What encrypts the secrets stored in the control store (credentials, channel secrets): the keys of
        EZ_SECRET_KEY, or of `<data>/secret.key`, created (mode 0600) the first time a secret is stored."""
        with self._box_lock:
            if self._box is None:
                key = self.settings.secret_key
                if key is None and self.store.shared:
                    log.warning("EZ_SECRET_KEY is unset with a shared control store: every replica must read the "
                                "same key file (%s), or set EZ_SECRET_KEY alike on all", self.data_dir / "secret.key")
                self._box = SecretBox.open(key.get_secret_value() if key else None, self.data_dir)
            return self._box

    def connect(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every lake view (`log_records`, ...) and the shared macros."""
        return catalog.connect(self.settings.data_dir, threads, self.lake.objects)
