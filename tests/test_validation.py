"""Every SPEC rule is refused with a message naming row, field and reason; valid input is coerced."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from engine import Engine
from engine.decoding import decode
from engine.errors import InvalidBatch
from engine.validation import validate
from tests.conftest import make_record


def refuse(records: list[dict], content_type: str = "application/x-ndjson") -> InvalidBatch:
    body = (
        "\n".join(json.dumps(r) for r in records) if content_type.endswith("ndjson") else json.dumps(records)
    ).encode()
    table, problems = decode(body, content_type)
    with pytest.raises(InvalidBatch) as info:
        validate(table, decode_errors=problems)
    return info.value


def accept(records: list[dict], content_type: str = "application/x-ndjson") -> pa.Table:
    body = (
        "\n".join(json.dumps(r) for r in records) if content_type.endswith("ndjson") else json.dumps(records)
    ).encode()
    table, problems = decode(body, content_type)
    return validate(table, decode_errors=problems)


RULES = [
    ({"request_id": ...}, "request_id", "is required"),
    ({"request_id": ""}, "request_id", "must not be empty"),
    ({"request_id": "   "}, "request_id", "must not be empty"),
    ({"request_id": 17}, "request_id", "expected a string"),
    ({"created_at": ...}, "created_at", "is required"),
    ({"created_at": "2026-01-01T12:00:00"}, "created_at", "RFC 3339"),
    ({"created_at": "yesterday"}, "created_at", "RFC 3339"),
    ({"created_at": 1767225600}, "created_at", "between 2000-01-01 and 2100-01-01"),
    ({"created_at": True}, "created_at", "expected"),
    ({"master_id": ...}, "master_id", "is required"),
    ({"master_id": 0}, "master_id", "must be >= 1, got 0"),
    ({"master_id": -4}, "master_id", "must be >= 1"),
    ({"master_id": 1.5}, "master_id", "expected an integer, got 1.5"),
    ({"master_id": "abc"}, "master_id", "expected an integer, got 'abc'"),
    ({"key_id": 0}, "key_id", "must be >= 1"),
    ({"key_id": ...}, "key_id", "is required"),
    ({"model": ...}, "model", "is required"),
    ({"model": ""}, "model", "must not be empty"),
    ({"model": 4}, "model", "expected a string"),
    ({"provider_id": "seven"}, "provider_id", "expected an integer"),
    ({"status_code": ...}, "status_code", "is required"),
    ({"status_code": 99}, "status_code", "must be between 100 and 599, got 99"),
    ({"status_code": 600}, "status_code", "must be between 100 and 599, got 600"),
    ({"status_code": 70000}, "status_code", "does not fit int16"),
    ({"latency_ms": ...}, "latency_ms", "is required"),
    ({"latency_ms": -1}, "latency_ms", "must be >= 0, got -1"),
    ({"latency_ms": 2**31}, "latency_ms", "does not fit int32"),
    ({"ttft_ms": -3}, "ttft_ms", "must be >= 0"),
    ({"prompt_tokens": ...}, "prompt_tokens", "is required"),
    ({"prompt_tokens": -1}, "prompt_tokens", "must be >= 0"),
    ({"completion_tokens": ...}, "completion_tokens", "is required"),
    ({"completion_tokens": -1}, "completion_tokens", "must be >= 0"),
    ({"completion_tokens": 3_000_000_000}, "completion_tokens", "does not fit int32"),
    ({"quota_cost": -1}, "quota_cost", "must be >= 0"),
    ({"is_stream": "maybe"}, "is_stream", "expected true or false"),
    ({"is_stream": 3}, "is_stream", "expected true or false"),
    ({"nickname": "x"}, "nickname", "unknown field"),
]


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json"])
@pytest.mark.parametrize(("override", "field", "reason"), RULES, ids=[f"{r[1]}:{r[2][:20]}" for r in RULES])
def test_each_rule_is_refused_with_row_field_and_reason(override, field, reason, content_type):
    records = [make_record(0), make_record(1), make_record(2, **override)]
    exc = refuse(records, content_type)
    matching = [e for e in exc.errors if e.field == field]
    assert matching, exc.errors
    assert matching[0].row == 3
    assert reason in matching[0].reason
    assert f"row 3, field '{field}'" in str(exc)


def test_unparsable_line_names_its_row():
    body = (json.dumps(make_record(0)) + "\n{not json\n" + json.dumps(make_record(2))).encode()
    table, problems = decode(body, "application/x-ndjson")
    with pytest.raises(InvalidBatch) as info:
        validate(table, decode_errors=problems)
    assert [(e.row, e.field) for e in info.value.errors] == [(2, None)]
    assert "invalid JSON" in info.value.errors[0].reason


def test_errors_are_listed_up_to_the_limit_and_counted_in_full():
    records = [make_record(i, status_code=999) for i in range(250)]
    table, problems = decode("\n".join(map(json.dumps, records)).encode(), "application/x-ndjson")
    with pytest.raises(InvalidBatch) as info:
        validate(table, decode_errors=problems, max_errors=10)
    assert len(info.value.errors) == 10
    assert info.value.total == 250


def test_coercions_where_unambiguous():
    rows = accept([
        make_record(0, created_at="2026-01-01T20:00:00+08:00"),
        make_record(1, created_at=1767268800000),
        make_record(2, master_id="42", is_stream="true"),
        make_record(3, quota_cost=..., is_stream=..., ttft_ms=None, group=...),
    ]).to_pylist()
    assert rows[0]["created_at"] == dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert rows[1]["created_at"] == dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert rows[2]["master_id"] == 42 and rows[2]["is_stream"] is True
    assert rows[3]["quota_cost"] == 0 and rows[3]["is_stream"] is False and rows[3]["group"] is None


def test_mixed_created_at_types_in_one_batch():
    rows = accept([make_record(0), make_record(1, created_at=1767225600000)], "application/x-ndjson").to_pylist()
    assert rows[1]["created_at"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_parquet_types_are_coerced_and_naive_timestamps_refused():
    table = pa.table({
        "request_id": ["a"], "created_at": pa.array([dt.datetime(2026, 1, 1, 1)], pa.timestamp("ns", "UTC")),
        "master_id": pa.array([1], pa.int32()), "key_id": pa.array([2], pa.uint8()), "model": ["m"],
        "status_code": pa.array([200.0]), "latency_ms": [1], "prompt_tokens": [0], "completion_tokens": [0],
    })
    out = validate(table)
    assert out.column("status_code").type == pa.int16() and out.column("key_id").to_pylist() == [2]
    naive = table.set_column(1, "created_at", pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("us")))
    with pytest.raises(InvalidBatch, match="without time zone"):
        validate(naive)


def test_an_invalid_batch_stores_nothing(engine: Engine):
    body = "\n".join(json.dumps(r) for r in [make_record(0), make_record(1, status_code=42)]).encode()
    with pytest.raises(InvalidBatch):
        engine.ingest_body(body, "application/x-ndjson")
    assert not engine.lake_has_records()
    assert engine.sql("SELECT count(*) AS n FROM log_records").column("n").to_pylist() == [0]
