"""The shared infrastructure every subsystem takes: settings, clock, control store, lake, DuckDB connections."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from engine import catalog
from engine.lake import Lake
from engine.manifest import Manifest
from engine.objectlake import ObjectLake
from engine.secretbox import SecretBox
from engine.settings import Settings
from engine.storage import open_storage
from engine.store import ControlStore
from engine.times import Clock


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
        """Create the data dir, open (and migrate) the control store and the lake writer."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = ControlStore(settings.control_db)
        storage = open_storage(settings.lake_url, settings.data_dir, settings.s3_endpoint_url)
        objects = ObjectLake(storage, Manifest(store)) if storage.remote else None
        return cls(settings, clock, store, Lake(settings, store, objects))

    @property
    def data_dir(self) -> Path:
        """Root of the lake and of the control store."""
        return self.settings.data_dir

    def now(self) -> dt.datetime:
        """The current instant by the engine's clock."""
        return self.clock()

    def secret_box(self) -> SecretBox:
        """What encrypts the secrets stored in the control store (credentials, channel secrets): the keys of
        EZ_SECRET_KEY, or of `<data>/secret.key`, created (mode 0600) the first time a secret is stored."""
        with self._box_lock:
            if self._box is None:
                key = self.settings.secret_key
                self._box = SecretBox.open(key.get_secret_value() if key else None, self.data_dir)
            return self._box

    def connect(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every lake view (`log_records`, ...) and the shared macros."""
        return catalog.connect(self.settings.data_dir, threads, self.lake.objects)
