"""Several real `ezstats serve` processes on one lake and one control store (tests and bench/replicas.py).

Where the lake is comes from `env` (EZ_DATA_DIR, or EZ_LAKE_URL where the storage layer has it), so the same
replicas run on a local folder or on S3.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One `ezstats serve` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


def wait_until_up(replica: Replica, timeout: float = 60) -> None:
    """Wait for the replica's /healthz (its migrations applied, its scheduler started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise AssertionError(f"replica {replica.url} exited: {replica.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{replica.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"replica {replica.url} did not start: {replica.log.read_text()[-3000:]}")


@contextmanager
def replicas(count: int, env: dict[str, str], logs: Path) -> Iterator[list[Replica]]:
    """Start `count` replicas with `env` (on top of this process's), each on its own loopback port; stop them
    (SIGTERM, then SIGKILL) at the end. `{replica}` in a value is replaced by the replica's index (a data dir
    of its own, as on another host)."""
    logs.mkdir(parents=True, exist_ok=True)
    started: list[Replica] = []
    try:
        for i in range(count):
            port = free_port()
            log = logs / f"replica-{i}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve"], cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **{k: v.replace("{replica}", str(i)) for k, v in env.items()}, "EZ_HOST": "127.0.0.1", "EZ_PORT": str(port)})
            started.append(Replica(f"http://127.0.0.1:{port}", process, log))
        for replica in started:
            wait_until_up(replica)
        yield started
    finally:
        for replica in started:
            replica.process.terminate()
        for replica in started:
            try:
                replica.process.wait(30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
