"""Small hand-made log records for the jobs tests, written through the real ingest path."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine import Engine, Settings
from engine.tables import DAILY_SCHEMA, DAILY_STATS

_ids = itertools.count()


def records(times: list[dt.datetime], key_ids: list[int] | None = None,
            costs: list[int] | None = None) -> pa.Table:
    """One record per time, with the given keys and quota costs (defaults: key 1, cost 1)."""
    n = len(times)
    return pa.table({
        "request_id": [f"r{next(_ids)}" for _ in range(n)],
        "created_at": pa.array(times, pa.timestamp("us", tz="UTC")),
        "master_id": [1] * n,
        "key_id": key_ids or [1] * n,
        "model": ["gpt-test"] * n,
        "status_code": [200] * n,
        "latency_ms": [10] * n,
        "prompt_tokens": [1] * n,
        "completion_tokens": [1] * n,
        "quota_cost": costs or [1] * n,
    })


def day_records(day: dt.date, rows: int, seed: int = 0) -> pa.Table:
    """`rows` records spread over one UTC day."""
    rng = random.Random(seed)
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return records([start + dt.timedelta(seconds=rng.randrange(86_400)) for _ in range(rows)])


def make_engine(tmp_path: Path, now: dt.datetime, **settings: Any) -> Engine:
    """An engine over `tmp_path` whose clock says `now` (change it with `engine.clock = ...`)."""
    return Engine(Settings(data_dir=tmp_path, scheduler_enabled=False, **settings), clock=lambda: now)


def mark_summarized(engine: Engine, day: dt.date) -> None:
    """What the stats job leaves once a day's rollups and daily stats are written: a daily_stats file."""
    path = engine.settings.data_dir / DAILY_STATS.file(day)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A valid file, so that a `daily_stats` view over it still binds; the cleaner only checks it exists.
    pq.write_table(DAILY_SCHEMA.empty_table(), path)
