"""The shared infrastructure every subsystem takes: settings, clock, control store, lake, DuckDB connections."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb

from engine import catalog
from engine.lake import Lake
from engine.settings import Settings
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

    @classmethod
    def open(cls, settings: Settings, clock: Clock) -> Infra:
        """Create the data dir, open (and migrate) the control store and the lake writer."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = ControlStore(settings.control_db)
        return cls(settings, clock, store, Lake(settings, store))

    @property
    def data_dir(self) -> Path:
        """Root of the lake and of the control store."""
        return self.settings.data_dir

    def now(self) -> dt.datetime:
        """The current instant by the engine's clock."""
        return self.clock()

    def connect(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every lake view (`log_records`, ...) and the shared macros."""
        return catalog.connect(self.settings.data_dir, threads)
