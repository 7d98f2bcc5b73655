"""POST /v1/logs over HTTP: content types, durability answer, problem+json errors, auth, limits, metrics."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from tests.conftest import BACKENDS, control_backend, make_record

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

NDJSON = {"content-type": "application/x-ndjson"}


def ndjson(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def count(engine: Engine) -> int:
    return engine.sql("SELECT count(*) AS n FROM log_records").column("n")[0].as_py()


def test_ndjson_json_and_arrow_are_stored(client: TestClient, engine: Engine):
    r1 = client.post("/v1/logs", content=ndjson([make_record(i) for i in range(3)]), headers=NDJSON)
    r2 = client.post("/v1/logs", json=[make_record(10 + i) for i in range(2)])
    sink = pa.BufferOutputStream()
    arrow = pa.Table.from_pylist([make_record(20)])
    with pa.ipc.new_stream(sink, arrow.schema) as w:
        w.write_table(arrow)
    r3 = client.post("/v1/logs", content=sink.getvalue().to_pybytes(),
                     headers={"content-type": "application/vnd.apache.arrow.stream"})
    assert [r.status_code for r in (r1, r2, r3)] == [201, 201, 201]
    assert [r.json()["records"] for r in (r1, r2, r3)] == [3, 2, 1]
    assert r1.json()["batch_id"].startswith("sha256:")
    assert count(engine) == 6


def test_replay_with_idempotency_key_answers_the_same_and_stores_nothing(client: TestClient, engine: Engine):
    headers = {**NDJSON, "Idempotency-Key": "gw-batch-0001"}
    first = client.post("/v1/logs", content=ndjson([make_record(i) for i in range(4)]), headers=headers)
    again = client.post("/v1/logs", content=ndjson([make_record(i) for i in range(4)]), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and first.json()["batch_id"] == "gw-batch-0001"
    assert again.headers["idempotent-replayed"] == "true"
    assert count(engine) == 4


def test_invalid_records_answer_422_problem_json_with_row_and_field(client: TestClient, engine: Engine):
    body = ndjson([make_record(0), make_record(1, status_code=700, master_id=0)])
    r = client.post("/v1/logs", content=body, headers=NDJSON)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 422 and problem["error_count"] == 2
    assert {(e["row"], e["field"]) for e in problem["errors"]} == {(2, "master_id"), (2, "status_code")}
    assert count(engine) == 0


def test_malformed_body_answers_400(client: TestClient):
    r = client.post("/v1/logs", content=b"[{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "invalid JSON" in r.json()["detail"]


def test_unknown_content_type_answers_415(client: TestClient):
    r = client.post("/v1/logs", content=b"a,b", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and r.headers["content-type"] == "application/problem+json"


def test_body_over_the_limit_answers_413(settings: Settings):
    settings.max_body_bytes = 1000
    with TestClient(create_app(engine=Engine(settings))) as client:
        small = client.post("/v1/logs", content=ndjson([make_record(0)]), headers=NDJSON)
        big = client.post("/v1/logs", content=ndjson([make_record(i) for i in range(20)]), headers=NDJSON)

        def chunks():
            yield ndjson([make_record(i) for i in range(20)])

        streamed = client.post("/v1/logs", content=chunks(), headers=NDJSON)  # no Content-Length
    assert small.status_code == 201
    assert big.status_code == 413 and big.headers["content-type"] == "application/problem+json"
    assert streamed.status_code == 413


def test_ingest_and_admin_tokens(settings: Settings):
    settings = Settings(data_dir=settings.data_dir, ingest_token="in-secret", admin_token="ad-secret")
    with TestClient(create_app(engine=Engine(settings))) as client:
        body = ndjson([make_record(0)])
        missing = client.post("/v1/logs", content=body, headers=NDJSON)
        wrong = client.post("/v1/logs", content=body, headers={**NDJSON, "Authorization": "Bearer nope"})
        admin = client.post("/v1/logs", content=body, headers={**NDJSON, "Authorization": "Bearer ad-secret"})
        right = client.post("/v1/logs", content=body, headers={**NDJSON, "Authorization": "Bearer in-secret"})
    assert [r.status_code for r in (missing, wrong, admin, right)] == [401, 401, 401, 201]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/problem+json"


def test_healthz_and_metrics_count_records_and_batches(client: TestClient):
    assert client.get("/healthz").json()["status"] == "ok"
    before = _metric(client, "ezstats_ingest_records_accepted_total")
    client.post("/v1/logs", content=ndjson([make_record(500 + i) for i in range(7)]), headers=NDJSON)
    client.post("/v1/logs", content=ndjson([make_record(600, status_code=1)]), headers=NDJSON)
    assert _metric(client, "ezstats_ingest_records_accepted_total") == before + 7
    text = client.get("/metrics").text
    assert 'ezstats_ingest_batches_total{outcome="rejected"}' in text
    assert "http_request_duration_seconds" in text


def test_unknown_route_and_bad_method_are_problem_json(client: TestClient):
    assert client.get("/nope").headers["content-type"] == "application/problem+json"
    assert client.get("/v1/logs").status_code == 405


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
