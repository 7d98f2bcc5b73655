"""SIGKILL a writer at random moments while another process counts rows through a glob.

Every count lies between the acked rows before and after it plus the batches in flight (one per writer
thread), no reader ever hits a partial file or a duplicate, and after the last restart (which replays the
batches that were in flight) the lake holds exactly the acknowledged batches. With eight writer threads
the batches are stored as groups (group commit): a kill never loses an acknowledged batch of a group.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.crash_writer import batch, read_acks

ROOT = Path(__file__).resolve().parents[1]
BATCHES = 400
MAX_BATCH_ROWS = 400


def spawn(module: str, *args: Path | int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 8])
def test_sigkill_never_exposes_partial_or_duplicate_data(tmp_path: Path, threads: int):
    data, acks, counts, stop = tmp_path / "data", tmp_path / "acks.log", tmp_path / "counts.jsonl", tmp_path / "stop"
    rng = random.Random(20260101)
    spawn("tests.crash_writer", data, acks, 0).wait()  # create the data dir before the reader starts
    counter = spawn("tests.crash_counter", data, acks, counts, stop)
    kills = 0
    try:
        for _ in range(25):
            writer = spawn("tests.crash_writer", data, acks, BATCHES, threads)
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.4))
            if writer.poll() is None:
                writer.send_signal(signal.SIGKILL)
                kills += 1
            writer.wait()
        final = spawn("tests.crash_writer", data, acks, BATCHES, threads)
        assert final.wait(timeout=300) == 0
    finally:
        stop.touch()
        counter.wait(timeout=60)

    assert kills >= 15
    observations = [json.loads(line) for line in counts.read_text().splitlines()]
    assert len(observations) > 50
    for o in observations:
        assert o["error"] is None, o
        assert o["seen"] == o["distinct"], o  # no duplicated request ids, ever
        assert o["before"] <= o["seen"] <= o["after"] + MAX_BATCH_ROWS * threads, o
    acked = read_acks(acks)
    assert sorted(acked) == list(range(BATCHES))
    expected = sum(batch(k).num_rows for k in range(BATCHES))
    assert sum(acked.values()) == expected
    pattern = data / "log_records" / "**" / "*.parquet"
    assert duckdb.sql(f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet('{pattern}')").fetchall() == [
        (expected, expected)
    ]
    assert [p for p in (data / "_staging").iterdir() if p.is_dir()] == []
