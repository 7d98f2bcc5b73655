"""A writer process for test_crash: stores batches 0..N-1, appending each ack to a log.

Run as `python -m tests.crash_writer DATA_DIR ACK_LOG N [THREADS]`. With one thread it stores them in order;
with several, each thread takes the next batch not yet acknowledged, so batches arrive together and are
stored as groups (group commit). On start it sends every batch not acked yet; those being written when it
was killed are simply sent again with the same id (a client retry).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
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
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    engine = Engine(Settings(data_dir=data_dir))
    acks = read_acks(ack_log)
    todo = [k for k in range(total) if k not in acks]
    lock = threading.Lock()
    print("ready", flush=True)
    with ack_log.open("a") as log:

        def work() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    k = todo.pop(0)
                receipt = engine.ingest_table(batch(k), f"batch-{k}")
                with lock:
                    log.write(f"{k} {receipt.records} ok\n")
                    log.flush()
                    os.fsync(log.fileno())

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


if __name__ == "__main__":
    main()
