"""A writer process for test_crash: stores batches 0..N-1 in order, appending each ack to a log.

Run as `python -m tests.crash_writer DATA_DIR ACK_LOG N`. On start it resumes after the last acked
batch; the batch it was writing when killed is simply sent again with the same id (a client retry).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pyarrow as pa

from engine import Engine, Settings

BASE = dt.datetime(2026, 5, 1, 23, 0, tzinfo=dt.UTC)


def batch(k: int) -> pa.Table:
    """Batch k, deterministic; every fifth one spans midnight (two partitions)."""
    rows = 1 + (k * 37) % 400
    step = dt.timedelta(minutes=3) if k % 5 == 0 else dt.timedelta(milliseconds=5)
    return pa.table({
        "request_id": [f"b{k}-{i}" for i in range(rows)],
        "created_at": pa.array([BASE + step * i for i in range(rows)], pa.timestamp("us", "UTC")),
        "master_id": [1] * rows, "key_id": [1 + k % 7] * rows, "model": ["m"] * rows,
        "status_code": [200] * rows, "latency_ms": [10] * rows, "prompt_tokens": [1] * rows,
        "completion_tokens": [1] * rows,
    })


def read_acks(path: Path) -> dict[int, int]:
    """Acked batch -> rows; a torn last line (killed mid-write) is ignored and its batch resent."""
    acks: dict[int, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "ok":
                acks[int(parts[0])] = int(parts[1])
    return acks


def main() -> None:
    data_dir, ack_log, total = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    engine = Engine(Settings(data_dir=data_dir))
    acks = read_acks(ack_log)
    start = max(acks, default=-1) + 1
    print("ready", flush=True)
    with ack_log.open("a") as log:
        for k in range(start, total):
            receipt = engine.ingest_table(batch(k), f"batch-{k}")
            log.write(f"{k} {receipt.records} ok\n")
            log.flush()
            os.fsync(log.fileno())


if __name__ == "__main__":
    main()
