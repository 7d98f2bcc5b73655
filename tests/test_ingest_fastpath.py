"""POST /v1/logs in its plain case is answered by `api.routers.ingest.FastPath`, outside FastAPI's routing: every
request must get exactly the answer the route gives, and only plain successes may be answered by the fast path."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routers.ingest import FastPath
from engine import Engine, Settings
from tests.conftest import make_record

LIMIT = 64 * 1024


def ndjson(*numbers: int, **overrides: Any) -> bytes:
    return b"\n".join(json.dumps(make_record(i, **overrides)).encode() for i in numbers) + b"\n"


def arrow_stream(*numbers: int) -> bytes:
    table = pa.Table.from_pylist([make_record(i) for i in numbers])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


#: (name, body, headers, query) in the order sent; the same to both apps.
REQUESTS: list[tuple[str, bytes, dict[str, str], str]] = [
    ("plain", ndjson(1, 2, 3), {"Content-Type": "application/x-ndjson"}, ""),
    ("no content type: NDJSON", ndjson(4, 5), {}, ""),
    ("jsonl with charset", ndjson(6), {"Content-Type": "application/jsonl; charset=utf-8"}, ""),
    ("keyed", ndjson(10, 11), {"Content-Type": "application/x-ndjson", "Idempotency-Key": "k1"}, ""),
    ("keyed replay", ndjson(10, 11), {"Content-Type": "application/x-ndjson", "Idempotency-Key": "k1"}, ""),
    ("key reused, other body", ndjson(12), {"Content-Type": "application/x-ndjson", "Idempotency-Key": "k1"}, ""),
    ("a record again: duplicate", ndjson(1, 20), {"Content-Type": "application/x-ndjson"}, ""),
    ("invalid record", ndjson(30, 31, latency_ms=-1), {"Content-Type": "application/x-ndjson"}, ""),
    ("not JSON", b"{oops\n", {"Content-Type": "application/x-ndjson"}, ""),
    ("empty", b"", {"Content-Type": "application/x-ndjson"}, ""),
    ("JSON array", json.dumps([make_record(40)]).encode(), {"Content-Type": "application/json"}, ""),
    ("Arrow IPC", arrow_stream(41, 42), {"Content-Type": "application/vnd.apache.arrow.stream"}, ""),
    ("gzip", gzip.compress(ndjson(43)), {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}, ""),
    ("unknown encoding", ndjson(44), {"Content-Type": "application/x-ndjson", "Content-Encoding": "br"}, ""),
    ("unsupported type", b"a,b\n", {"Content-Type": "text/csv"}, ""),
    ("unknown query parameter", ndjson(45), {"Content-Type": "application/x-ndjson"}, "?dry_run=1"),
    ("key too long", ndjson(46), {"Content-Type": "application/x-ndjson", "Idempotency-Key": "k" * 201}, ""),
    ("empty key", ndjson(47), {"Content-Type": "application/x-ndjson", "Idempotency-Key": ""}, ""),
    ("over the body limit", ndjson(*range(100, 400)), {"Content-Type": "application/x-ndjson"}, ""),
    ("request id given", ndjson(48), {"Content-Type": "application/x-ndjson", "X-Request-Id": "given-1"}, ""),
]
#: The requests the fast path answers itself (the others go to the route).
FAST = {"plain", "no content type: NDJSON", "jsonl with charset", "keyed", "keyed replay", "a record again: duplicate",
        "JSON array", "Arrow IPC", "gzip", "request id given"}


def _fast_path(app: Any) -> FastPath:
    layer = app.middleware_stack
    while not isinstance(layer, FastPath):
        layer = layer.app
    return layer


def _client(tmp_path: Path, name: str, fast: bool, **settings: Any) -> Iterator[tuple[TestClient, Engine]]:
    engine = Engine(Settings(data_dir=tmp_path / name, scheduler_enabled=False, max_body_bytes=LIMIT, **settings))
    app = create_app(engine=engine)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    with TestClient(app) as client:
        yield client, engine


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[tuple[TestClient, Engine]]:
    yield from _client(tmp_path, "fast", True)


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[tuple[TestClient, Engine]]:
    yield from _client(tmp_path, "routed", False)


def _answer(response: Any) -> dict[str, Any]:
    body = response.json() if response.content else None
    if isinstance(body, dict):
        body.pop("files", None)  # file names carry a time and a random token
        body.pop("instance", None)
    headers = {k: response.headers.get(k) for k in ("content-type", "idempotent-replayed", "x-request-id")}
    if headers["x-request-id"] != "given-1":
        headers["x-request-id"] = bool(headers["x-request-id"])  # made per request: present, that is all
    return {"status": response.status_code, "headers": headers, "body": body}


def test_every_request_gets_the_routes_answer_and_only_plain_successes_take_the_fast_path(
        fast: tuple[TestClient, Engine], routed: tuple[TestClient, Engine]):
    (fast_client, fast_engine), (routed_client, routed_engine) = fast, routed
    answered = 0
    for name, body, headers, query in REQUESTS:
        got = fast_client.post(f"/v1/logs{query}", content=body, headers=headers)
        expected = routed_client.post(f"/v1/logs{query}", content=body, headers=headers)
        assert _answer(got) == _answer(expected), name
        now = _fast_path(fast_client.app).answered
        assert (now - answered, got.status_code) == ((1, 201) if name in FAST else (0, got.status_code)), name
        answered = now
    assert answered == len(FAST)
    # The records stored are the same, and are what the accepted requests sent (recounted from the bodies).
    sent = {make_record(i)["request_id"] for i in (1, 2, 3, 4, 5, 6, 10, 11, 20, 40, 41, 42, 43, 48)}
    for engine in (fast_engine, routed_engine):
        stored = engine.sql("SELECT request_id FROM log_records").column("request_id").to_pylist()
        assert sorted(stored) == sorted(sent)


def test_the_ingest_token_is_checked_before_anything_is_read(tmp_path: Path):
    for client, _engine in _client(tmp_path, "token", True, ingest_token="gw-secret"):
        path = None
        for auth, status in ((None, 401), ("Bearer wrong", 401), ("Basic gw-secret", 401), ("Bearer gw-secret", 201),
                             ("bearer  gw-secret ", 201)):
            headers = {"Content-Type": "application/x-ndjson"} | ({"Authorization": auth} if auth else {})
            response = client.post("/v1/logs", content=ndjson(1), headers=headers)
            assert response.status_code == status, auth
            if status == 401:
                assert response.headers["content-type"] == "application/problem+json"
            path = path or _fast_path(client.app)
        assert path is not None and path.answered == 2


def test_a_refused_body_is_decoded_once_and_answered_from_its_refusal(fast: tuple[TestClient, Engine]):
    client, engine = fast
    intake = engine.intake
    for name, body, status in (("invalid record", ndjson(1, 2, latency_ms=-1), 422),
                               ("not JSON", b'{"request_id": oops\n', 422)):
        before = intake.items
        response = client.post("/v1/logs", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert response.status_code == status, name
        assert response.headers["content-type"] == "application/problem+json", name
        # One body through the intake: the route answered the fast path's refusal, it did not ingest the body again.
        assert intake.items - before == 1, name
    assert _fast_path(client.app).answered == 0
    assert engine.sql("SELECT count(*) AS n FROM log_records").column("n").to_pylist() in ([0], [])
