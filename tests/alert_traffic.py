"""Generated gateway traffic for the alert tests: exact request counts at exact instants."""

from __future__ import annotations

import datetime as dt
import itertools

import pyarrow as pa

from engine import Engine

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def requests(
    end: dt.datetime,
    minutes: float,
    count: int,
    *,
    master_id: int = 1,
    key_id: int = 10,
    status: int = 200,
    provider_key_id: int | None = 100,
    tokens: int = 100,
    quota_cost: int = 0,
) -> list[dict[str, object]]:
    """`count` requests spread evenly over [end - minutes, end), all alike."""
    step = dt.timedelta(minutes=minutes) / max(count, 1)
    start = end - dt.timedelta(minutes=minutes)
    return [
        {
            "request_id": f"r{next(_ids)}",
            "created_at": start + step * i,
            "master_id": master_id,
            "key_id": key_id,
            "model": "gpt-4o",
            "provider_id": 1 if provider_key_id else None,
            "provider_type": "openai" if provider_key_id else None,
            "provider_key_id": provider_key_id,
            "status_code": status,
            "latency_ms": 100,
            "prompt_tokens": tokens // 2,
            "completion_tokens": tokens - tokens // 2,
            "quota_cost": quota_cost,
        }
        for i in range(count)
    ]


def store(engine: Engine, *batches: list[dict[str, object]]) -> None:
    """Write records through the real ingest path."""
    rows = [r for batch in batches for r in batch]
    if rows:
        engine.ingest_table(pa.Table.from_pylist(rows))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def minutes(n: float) -> dt.timedelta:
    """n minutes."""
    return dt.timedelta(minutes=n)


def set_thresholds(engine: Engine, **changes: object) -> None:
    """Store the default thresholds with some rules' fields changed, e.g. error_spike={"warning": 0.2}."""
    body = engine.alerts.read_thresholds().thresholds.model_dump()
    for name, value in changes.items():
        if isinstance(value, dict):
            body[name].update(value)
        else:
            body[name] = value
    engine.alerts.update_thresholds(body, None)


def error_rate_engine(tmp_path, clock, **settings: object) -> Engine:
    """An engine on tmp_path/data where only the error-rate and quota rules fire (the notification tests)."""
    from engine import Settings

    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False, **settings), clock=clock)
    set_thresholds(engine, rate_limit={"enabled": False}, provider_down={"enabled": False},
                   traffic_spike={"enabled": False})
    return engine


def errors_minute(engine: Engine, end: dt.datetime, ok: int, failed: int, key_id: int = 7, master_id: int = 1) -> None:
    """One minute of one key's traffic ending at `end`: `ok` successes and `failed` 500s."""
    store(engine, requests(end, 1, ok, key_id=key_id, master_id=master_id),
          requests(end, 1, failed, key_id=key_id, master_id=master_id, status=500))
