"""Hostile and careless inputs get a clear problem+json answer, never a plain-text 5xx (issue 10, "Found" 5).

Each case once answered a text/plain 500. An unexpected failure still answers 500, as problem+json with a
request id that the log line with the traceback also names.
"""

from __future__ import annotations

import base64
import json
import logging

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine
from tests.conftest import make_record

BIG = 2**63  # one beyond int64
ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
def api(engine: Engine) -> TestClient:
    # raise_server_exceptions=False: see what a real client gets when something breaks.
    return TestClient(create_app(engine=engine), raise_server_exceptions=False)


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(f'{{"before": {raw}}}'.encode()).decode().rstrip("=")


def assert_problem(r, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.text
    body = r.json()
    assert body["status"] == status and body["title"]
    if kind:
        assert body["type"] == f"/problems/{kind}", body
    return body


@pytest.mark.parametrize(("content", "headers"), [
    (b"[]", {"content-type": "application/json"}),
    (b"", NDJSON),
    (b"\n  \n\t\n", NDJSON),
    (arrow_stream(pa.table({"request_id": pa.array([], pa.string())})), ARROW),
], ids=["json []", "empty ndjson", "blank ndjson", "0-row arrow"])
def test_an_empty_batch_answers_422_and_stores_nothing(api: TestClient, engine: Engine, content, headers):
    body = assert_problem(api.post("/v1/logs", content=content, headers=headers), 422, "invalid-records")
    assert body["errors"] == [{"row": 0, "field": None, "reason": "the batch holds no records"}]
    assert engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == 0


@pytest.mark.parametrize(("method", "path", "params", "body"), [
    ("get", f"/admin/keys/{BIG}/usage", {}, None),
    ("get", f"/admin/keys/{BIG}/quota", {}, None),
    ("delete", f"/admin/keys/{BIG}/quota", {}, None),
    ("get", "/admin/alerts", {"key_id": BIG}, None),
    ("get", "/admin/alerts", {"master_id": -BIG - 1}, None),
    ("get", f"/admin/alerts/{BIG}", {}, None),
    ("post", f"/admin/alerts/{BIG}/ack", {}, None),
    ("post", f"/admin/alerts/{BIG}/resolve", {}, None),
    ("put", "/admin/keys/1/quota", {}, {"quota_limit": 2**70, "reset_period": "daily"}),
    ("put", f"/admin/keys/{BIG}/quota", {}, {"quota_limit": 5, "reset_period": "daily"}),
    ("put", "/admin/registry", {}, {"masters": [{"master_id": BIG}]}),
    ("put", "/admin/registry", {}, {"deleted": {"keys": [BIG]}}),
    ("get", "/admin/stats", {"key_id": BIG}, None),
    ("get", "/admin/stats/series", {"provider_key_id": BIG}, None),
    ("get", "/admin/stats/daily", {"master_id": BIG}, None),
])
def test_ids_beyond_int64_answer_422(api: TestClient, method, path, params, body):
    assert_problem(api.request(method, path, params=params, json=body), 422, "invalid-request")


def test_ids_beyond_int64_in_records_are_named_in_every_format(api: TestClient, engine: Engine):
    ndjson = json.dumps(make_record(0, master_id=9223372036854775808)).encode()
    body = assert_problem(api.post("/v1/logs", content=ndjson, headers=NDJSON), 422, "invalid-records")
    assert (body["errors"][0]["row"], body["errors"][0]["field"]) == (1, "master_id")
    huge = json.dumps([make_record(0, key_id=2**64 + 5)]).encode()
    body = assert_problem(api.post("/v1/logs", content=huge, headers={"content-type": "application/json"}), 422)
    assert body["errors"][0]["field"] == "key_id"
    table = pa.Table.from_pylist([make_record(0), make_record(1)])
    status = pa.array([200, 2**63 + 7], pa.uint64())
    table = table.set_column(table.schema.get_field_index("status_code"), "status_code", status)
    body = assert_problem(api.post("/v1/logs", content=arrow_stream(table), headers=ARROW), 422)
    assert (body["errors"][0]["row"], body["errors"][0]["field"]) == (2, "status_code")
    wide = table.set_column(table.schema.get_field_index("status_code"), "status_code",
                            pa.array([200, 40_000], pa.uint64()))
    body = assert_problem(api.post("/v1/logs", content=arrow_stream(wide), headers=ARROW), 422)
    assert "does not fit int16" in body["errors"][0]["reason"]
    digits = json.dumps(make_record(0, quota_cost="99999999999999999999")).encode()
    assert_problem(api.post("/v1/logs", content=digits, headers=NDJSON), 422, "invalid-records")
    assert engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == 0


def test_malformed_arrow_streams_answer_4xx(api: TestClient):
    twice = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["model", "model"])
    body = assert_problem(api.post("/v1/logs", content=arrow_stream(twice), headers=ARROW), 422, "invalid-records")
    assert body["errors"][0]["field"] == "model" and "more than once" in body["errors"][0]["reason"]
    whole = arrow_stream(pa.Table.from_pylist([make_record(i) for i in range(50)]))
    for cut in (len(whole) // 3, len(whole) - 9):
        assert_problem(api.post("/v1/logs", content=whole[:cut], headers=ARROW), 400, "malformed-body")


@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("path", ["/admin/alerts", "/admin/alerts/stats"])
def test_naive_or_out_of_range_datetimes_answer_422(api: TestClient, path, param):
    assert_problem(api.get(path, params={param: "2026-01-01T00:00:00"}), 422, "invalid-request")
    assert_problem(api.get(path, params={param: "0001-01-01T00:00:00+01:00"}), 422, "invalid-request")
    assert_problem(api.get(path, params={param: "9999-12-31T23:59:59-01:00"}), 422, "invalid-request")


def test_datetimes_in_bodies_need_an_offset(api: TestClient):
    for stamp in ("2026-01-01T00:00:00", "0001-01-01T00:30:00+01:00"):
        assert_problem(api.put("/admin/keys/1/quota", json={"quota_limit": 5, "reset_period": "daily",
                                                           "last_reset_at": stamp}), 422, "invalid-request")


@pytest.mark.parametrize("raw", ["1e400", "Infinity", "-Infinity", "NaN", str(BIG), "true", "-5", '"7"', "1.5"])
def test_forged_cursors_answer_422(api: TestClient, raw):
    assert_problem(api.get("/admin/alerts", params={"cursor": cursor(raw)}), 422, "invalid-request")


@pytest.mark.parametrize("route", ["/admin/stats", "/admin/stats/series"])
@pytest.mark.parametrize(("first", "last"), [("0001-01-01", "0001-01-02"), ("9999-12-30", "9999-12-31"),
                                             ("1999-12-31", "2000-01-01"), ("2099-12-31", "2100-01-01")])
def test_custom_periods_outside_the_record_range_answer_422(api: TestClient, route, first, last):
    body = assert_problem(api.get(route, params={"period": "custom", "from": first, "to": last}), 422)
    assert "2000-01-01" in body["detail"]


@pytest.mark.parametrize(("first", "last"), [("0001-01-01", "0001-01-01"), ("9999-12-31", "9999-12-31")])
def test_previews_outside_the_record_range_answer_422(api: TestClient, first, last):
    assert_problem(api.post("/admin/alerts/thresholds/preview", json={"from": first, "to": last}), 422)


@pytest.mark.parametrize("etag", ["²".encode(), b"9" * 5000, b'"12345678901234567890"', b"W/\xe2\x80\x8b1"])
def test_odd_if_match_headers_answer_412(api: TestClient, etag):
    assert_problem(api.put("/admin/alerts/thresholds", json={}, headers={"If-Match": etag}), 412)


def test_an_unexpected_failure_is_a_logged_problem_with_a_request_id(api: TestClient, engine: Engine,
                                                                      monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug nobody foresaw")

    monkeypatch.setattr(engine.registry, "read", broken)  # stands for any bug behind a route
    with caplog.at_level(logging.ERROR, logger="api.problems"):
        r = api.get("/admin/registry")
    body = assert_problem(r, 500, "internal-error")
    rid = body["request_id"]
    assert r.headers["x-request-id"] == rid and rid in body["detail"]
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError
    assert "a bug nobody foresaw" in caplog.text and "Traceback" in caplog.text


def test_every_answer_carries_a_request_id(api: TestClient):
    ok = api.get("/healthz")
    assert len(ok.headers["x-request-id"]) == 32
    mine = api.get("/admin/stats", params={"period": "nope"}, headers={"X-Request-Id": "gw-trace.42"})
    assert mine.status_code == 422 and mine.headers["x-request-id"] == "gw-trace.42"
    forged = api.get("/healthz", headers={"X-Request-Id": "evil\tvalue"})
    assert forged.headers["x-request-id"] != "evil\tvalue"


def test_healthz_reveals_no_filesystem_path(api: TestClient, engine: Engine):
    r = api.get("/healthz")
    assert r.status_code == 200 and set(r.json()) == {"status", "version"}
    assert str(engine.settings.data_dir) not in r.text and "/" not in json.dumps(r.json()["status"])
