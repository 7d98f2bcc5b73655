"""Honest idempotency (IETF Idempotency-Key draft): a key is bound to its body's fingerprint, a replay answers
the first receipt, and client keys cannot reach content-hash ids (issue 10, "Found" 3)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from engine.lake import content_batch_id
from tests.conftest import BACKENDS, SQLITE_ONLY, control_backend, make_record

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

NDJSON = {"content-type": "application/x-ndjson"}


def body(*ids: int) -> bytes:
    return "\n".join(json.dumps(make_record(i)) for i in ids).encode()


def stored(engine: Engine) -> list[str]:
    return engine.sql("SELECT request_id FROM log_records ORDER BY 1").column(0).to_pylist()


def test_the_same_key_with_another_body_answers_422_and_stores_nothing(client: TestClient, engine: Engine):
    key = {**NDJSON, "Idempotency-Key": "gw-7"}
    first = client.post("/v1/logs", content=body(1, 2), headers=key)
    assert first.status_code == 201
    other = client.post("/v1/logs", content=body(3, 4), headers=key)
    assert other.status_code == 422 and other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert "gw-7" in other.json()["detail"]
    assert stored(engine) == ["req-1", "req-2"]
    replay = client.post("/v1/logs", content=body(1, 2), headers=key)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()


def test_concurrent_bodies_under_one_key_store_one_and_refuse_the_others(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False))
    client = TestClient(create_app(engine=engine))
    bodies = [body(*range(100 * k, 100 * k + 50)) for k in range(4)]
    start = threading.Barrier(4)
    answers: list[tuple[int, dict]] = [(0, {})] * 4

    def send(k: int) -> None:
        start.wait()
        r = client.post("/v1/logs", content=bodies[k], headers={**NDJSON, "Idempotency-Key": "one-key"})
        answers[k] = (r.status_code, r.json())

    receipts = set()
    for _ in range(3):  # the race, then replays of it: one body wins, the others are refused every time
        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(code for code, _ in answers) == [201, 422, 422, 422], answers
        receipts |= {json.dumps(a, sort_keys=True) for code, a in answers if code == 201}
        assert all(a["type"] == "/problems/idempotency-key-reused" for code, a in answers if code != 201)
    assert len(receipts) == 1
    got = stored(engine)
    assert len(got) == 50 and len(set(got)) == 50
    winner = next(k for k in range(4) if f"req-{100 * k}" in got)
    assert got == sorted(f"req-{i}" for i in range(100 * winner, 100 * winner + 50))


def test_a_client_key_cannot_name_a_content_hash(client: TestClient, engine: Engine):
    victim = body(10, 11)
    forged = client.post("/v1/logs", content=body(99), headers={**NDJSON, "Idempotency-Key": content_batch_id(victim)})
    assert forged.status_code == 201 and forged.json()["batch_id"] == content_batch_id(victim)
    honest = client.post("/v1/logs", content=victim, headers=NDJSON)
    assert honest.status_code == 201 and "idempotent-replayed" not in honest.headers
    assert honest.json()["records"] == 2
    assert stored(engine) == ["req-10", "req-11", "req-99"]
    # And the other way round: a content hash is not a key a client sent.
    again = client.post("/v1/logs", content=body(10, 11), headers={**NDJSON, "Idempotency-Key": "k-10"})
    assert again.status_code == 201 and again.json()["records"] == 0 and again.json()["duplicates"] == 2


def test_a_replay_answers_the_original_receipt(client: TestClient, engine: Engine):
    client.post("/v1/logs", content=body(1), headers=NDJSON)
    headers = {**NDJSON, "Idempotency-Key": "gw-8"}
    first = client.post("/v1/logs", content=body(1, 2, 3), headers=headers)
    assert (first.json()["records"], first.json()["duplicates"]) == (2, 1)
    for _ in range(2):
        again = client.post("/v1/logs", content=body(1, 2, 3), headers=headers)
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"


def test_an_empty_idempotency_key_is_refused(client: TestClient):
    r = client.post("/v1/logs", content=body(1), headers={**NDJSON, "Idempotency-Key": ""})
    assert r.status_code == 422 and r.json()["type"] == "/problems/invalid-request"


@SQLITE_ONLY  # it edits the SQLite file as 0.1.0 left it
def test_keys_stored_before_the_upgrade_keep_answering(tmp_path: Path):
    """Migration: client keys of an older ledger move into the key namespace, content hashes stay."""
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False))
    client = TestClient(create_app(engine=engine))
    first = client.post("/v1/logs", content=body(1), headers={**NDJSON, "Idempotency-Key": "old-key"})
    plain = client.post("/v1/logs", content=body(2), headers=NDJSON)
    with sqlite3.connect(tmp_path / "ezstats.db") as con:  # what ezstats 0.1.0 stored
        con.execute("UPDATE ingest_batches SET batch_id = 'old-key', fingerprint = NULL WHERE batch_id = 'key:old-key'")
        con.execute("DELETE FROM schema_migrations WHERE version >= 6")  # before the hardening migration
        con.execute("PRAGMA user_version = 5")
        con.execute("ALTER TABLE ingest_batches DROP COLUMN fingerprint")
        con.execute("ALTER TABLE ingest_batches DROP COLUMN duplicates")
        con.execute("ALTER TABLE ingest_batches DROP COLUMN truncated")
        con.execute("DROP TABLE quarantined_files")
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False))  # migrates again
    client = TestClient(create_app(engine=engine))
    again = client.post("/v1/logs", content=body(1), headers={**NDJSON, "Idempotency-Key": "old-key"})
    assert again.headers["idempotent-replayed"] == "true" and again.json()["batch_id"] == "old-key"
    assert again.json()["records"] == first.json()["records"]
    assert client.post("/v1/logs", content=body(2), headers=NDJSON).json()["batch_id"] == plain.json()["batch_id"]
    assert stored(engine) == ["req-1", "req-2"]


@pytest.mark.parametrize("mode", ["file", "body"])
def test_the_engine_binds_keys_outside_http_too(engine: Engine, tmp_path: Path, mode):
    from engine.errors import IdempotencyKeyReused

    if mode == "body":
        engine.ingest_body(body(1), "application/x-ndjson", idempotency_key="k")
        with pytest.raises(IdempotencyKeyReused):
            engine.ingest_body(body(2), "application/x-ndjson", idempotency_key="k")
    else:
        path = tmp_path / "a.ndjson"
        path.write_bytes(body(1))
        assert not engine.ingest_file(path).replayed
        assert engine.ingest_file(path).replayed
    assert stored(engine) == ["req-1"]
