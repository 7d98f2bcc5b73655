"""A full disk answers 507 problem+json and stores nothing, at any step of a write (issue 10, "Found" 5).

The data dir lives on a real, small tmpfs mounted for the test (CI runs as root); the disk is filled
with a file of zeros, so every ENOSPC and SQLITE_FULL below is the kernel's own.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from engine.lake import Lake
from tests.conftest import make_record

NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root, so this runs there)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the disk with a file of zeros until at most `leave` bytes are free; returns the file."""
    filler = disk / "filler"
    with open(filler, "ab") as f:
        chunk = b"\0" * 65536
        while True:
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(chunk[: max(4096, min(len(chunk), free - leave))])
                f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def lines(first: int, n: int) -> bytes:
    return "\n".join(json.dumps(make_record(i, error_message=f"e{i}" * 40)) for i in range(first, first + n)).encode()


def state(engine: Engine) -> tuple[int, int, list[str]]:
    """Records stored, ledger rows, staging leftovers."""
    rows = engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() if engine.lake_has_records() else 0
    with engine.store.connect(write=False) as con:
        batches = con.execute("SELECT count(*) FROM ingest_batches").fetchone()[0]
    leftovers = sorted(p.name for p in engine.settings.staging_dir.iterdir() if p.is_dir())
    return rows, batches, leftovers


def test_a_full_disk_while_encoding_answers_507_and_stores_nothing(disk: Path):
    engine = Engine(Settings(data_dir=disk / "data", scheduler_enabled=False))
    client = TestClient(create_app(engine=engine))
    assert client.post("/v1/logs", content=lines(0, 100), headers=NDJSON).status_code == 201
    before = state(engine)
    filler = fill(disk, leave=16 * 1024)
    r = client.post("/v1/logs", content=lines(1000, 20_000), headers={**NDJSON, "Idempotency-Key": "big"})
    assert r.status_code == 507 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/insufficient-storage" and r.json()["request_id"]
    filler.unlink()  # (reading the state needs a little room too)
    assert state(engine) == before
    again = client.post("/v1/logs", content=lines(1000, 20_000), headers={**NDJSON, "Idempotency-Key": "big"})
    assert again.status_code == 201 and again.json()["records"] == 20_000
    assert state(engine)[0] == 20_100


def test_a_full_disk_at_the_ledger_commit_answers_507_and_takes_the_files_back(disk: Path, monkeypatch):
    engine = Engine(Settings(data_dir=disk / "data", scheduler_enabled=False))
    client = TestClient(create_app(engine=engine))
    assert client.post("/v1/logs", content=lines(0, 100), headers=NDJSON).status_code == 201
    before = state(engine)
    publish = Lake._publish
    seen: list[int] = []

    def publish_then_fill(self, folder, staged):  # the files are in the table when the disk fills up
        publish(self, folder, staged)
        seen.append(len(list((disk / "data" / "log_records").glob("*/*.parquet"))))
        fill(disk)

    monkeypatch.setattr(Lake, "_publish", publish_then_fill)
    r = client.post("/v1/logs", content=lines(500, 300), headers={**NDJSON, "Idempotency-Key": "k"})
    monkeypatch.setattr(Lake, "_publish", publish)
    assert seen == [2]  # it was published, then the commit found the disk full
    assert r.status_code == 507 and r.json()["type"] == "/problems/insufficient-storage", r.text
    assert len(list((disk / "data" / "log_records").glob("*/*.parquet"))) == 1  # the files left the table again
    (disk / "filler").unlink()
    rows, _, leftovers = state(engine)
    assert rows == before[0] and all(name.endswith(".aborted") for name in leftovers)
    again = client.post("/v1/logs", content=lines(500, 300), headers={**NDJSON, "Idempotency-Key": "k"})
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert state(engine) == (400, 2, [])
    reopened = Engine(engine.settings)
    assert state(reopened) == (400, 2, [])


def test_a_full_disk_answers_507_on_other_writes_too(disk: Path):
    engine = Engine(Settings(data_dir=disk / "data", scheduler_enabled=False))
    client = TestClient(create_app(engine=engine))
    version = client.get("/admin/alerts/thresholds").headers["etag"]
    fill(disk)
    r = client.put("/admin/alerts/thresholds", json={"cooldown_minutes": 7}, headers={"If-Match": version})
    assert r.status_code == 507 and r.json()["type"] == "/problems/insufficient-storage"
    (disk / "filler").unlink()
    assert client.get("/admin/alerts/thresholds").headers["etag"] == version
