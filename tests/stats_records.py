"""Generated log records for the stats tests: spread over time, with the edge cases stats must get right."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from engine.schema import LOG_RECORD_SCHEMA

NOW = dt.datetime(2026, 3, 18, 14, 25, 30, tzinfo=dt.UTC)  # a Wednesday
MODELS = ["gpt-4o", "claude-3.5-sonnet", "gemini-1.5-pro", "模型-中文", "modèle-é", "llama 3 🦙"]
STATUSES = [200, 200, 200, 201, 399, 400, 429, 499, 500, 503, 599]
INT32_MAX = 2**31 - 1


def records(n: int, seed: int, start: dt.datetime, end: dt.datetime, prefix: str = "r") -> pa.Table:
    """n log records spread over [start, end), with the edge cases stats must get right."""
    rng = np.random.default_rng(seed)
    span = int((end - start).total_seconds() * 1_000_000)
    offsets = rng.integers(0, span, n)
    created = [start + dt.timedelta(microseconds=int(o)) for o in offsets]
    key = rng.integers(1, 13, n)
    provider = rng.integers(1, 4, n).astype(object)
    refused = rng.random(n) < 0.08
    provider[refused] = None
    pkey = np.array([None if p is None else int(p) * 10 + int(k % 3) for p, k in zip(provider, key, strict=True)],
                    dtype=object)
    big = rng.random(n) < 0.02
    prompt = np.where(big, INT32_MAX - rng.integers(0, 5, n), rng.integers(0, 4000, n))
    completion = np.where(big, INT32_MAX, rng.integers(0, 2000, n))
    latency = np.round(rng.lognormal(6, 1.2, n)).astype(np.int64)
    latency[rng.random(n) < 0.01] = 0
    stream = rng.random(n) < 0.4
    ttft = np.where(stream, latency // 3, -1)
    return pa.table({
        "request_id": [f"{prefix}-{seed}-{i}" for i in range(n)],
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "master_id": pa.array(key % 4 + 1, pa.int64()),
        "key_id": pa.array(key, pa.int64()),
        "group": pa.nulls(n, pa.string()),
        "model": [MODELS[i] for i in rng.integers(0, len(MODELS), n)],
        "provider_id": pa.array(list(provider), pa.int64()),
        "provider_type": pa.nulls(n, pa.string()),
        "provider_key_id": pa.array(list(pkey), pa.int64()),
        "status_code": pa.array([STATUSES[i] for i in rng.integers(0, len(STATUSES), n)], pa.int16()),
        "error_type": pa.nulls(n, pa.string()),
        "error_message": pa.nulls(n, pa.string()),
        "latency_ms": pa.array(latency, pa.int32()),
        "ttft_ms": pa.array([None if t < 0 else int(t) for t in ttft], pa.int32()),
        "prompt_tokens": pa.array(prompt, pa.int32()),
        "completion_tokens": pa.array(completion, pa.int32()),
        "quota_cost": pa.array(rng.integers(0, 50, n), pa.int64()),
        "is_stream": pa.array(stream),
        "client_ip": pa.nulls(n, pa.string()),
    }).cast(LOG_RECORD_SCHEMA)


def edge_records(day: dt.date, prefix: str = "edge") -> pa.Table:
    """Records exactly at the boundaries of a UTC day and with extreme values."""
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    times = [midnight, midnight + dt.timedelta(days=1) - dt.timedelta(microseconds=1),
             midnight + dt.timedelta(days=1), midnight - dt.timedelta(microseconds=1)]
    base = records(len(times), 99, midnight, midnight + dt.timedelta(hours=1), prefix)
    return base.set_column(1, "created_at", pa.array(times, pa.timestamp("us", tz="UTC"))).cast(LOG_RECORD_SCHEMA)
