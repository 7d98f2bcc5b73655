"""Hypothesis at the ingest door: random bytes and random Arrow tables get a 4xx, or a 201 whose records read
back identically (issue 10, "Keep it closed").

The Arrow tables mix every column of SPEC.md with unknown ones, in random Arrow types, with values near and
beyond each rule's edges. A plain-Python oracle, written from SPEC.md apart from `engine.validation`, says
whether a table is valid; the answer must agree: 201 and the very values back through DuckDB, or 422.
"""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import zstandard
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from engine import Engine, Settings

ARROW = "application/vnd.apache.arrow.stream"
CONTENT_TYPES = ["application/x-ndjson", "application/json", ARROW, "text/csv", "application/jsonl"]
EDGES = [-(2**63), -(2**31) - 1, -1, 0, 1, 99, 100, 404, 599, 600, 2**15 - 1, 2**15, 2**31 - 1, 2**31, 2**53,
         2**63 - 1]
INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
#: SPEC.md's rules, restated: (kind, required, low, high, most characters).
SPEC: dict[str, tuple[str, bool, int | None, int | None, int | None]] = {
    "request_id": ("str", True, None, None, 200), "created_at": ("time", True, None, None, None),
    "master_id": ("int", True, 1, 2**63 - 1, None), "key_id": ("int", True, 1, 2**63 - 1, None),
    "group": ("str", False, None, None, 200), "model": ("str", True, None, None, 200),
    "provider_id": ("int", False, -(2**63), 2**63 - 1, None), "provider_type": ("str", False, None, None, 100),
    "provider_key_id": ("int", False, -(2**63), 2**63 - 1, None), "status_code": ("int", True, 100, 599, None),
    "error_type": ("str", False, None, None, 100), "error_message": ("str", False, None, None, None),
    "latency_ms": ("int", True, 0, 2**31 - 1, None), "ttft_ms": ("int", False, 0, 2**31 - 1, None),
    "prompt_tokens": ("int", True, 0, 2**31 - 1, None), "completion_tokens": ("int", True, 0, 2**31 - 1, None),
    "quota_cost": ("int", False, 0, 2**63 - 1, None), "is_stream": ("bool", False, None, None, None),
    "client_ip": ("str", False, None, None, 64),
}
EARLIEST, LATEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
_batches = itertools.count()


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, TestClient]:
    engine = Engine(Settings(data_dir=Path(tmp_path_factory.mktemp("door")), scheduler_enabled=False,
                             max_body_bytes=1_000_000))
    return engine, TestClient(create_app(engine=engine), raise_server_exceptions=False)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=3000) | st.text(max_size=300).map(str.encode),
       content_type=st.sampled_from(CONTENT_TYPES),
       encoding=st.sampled_from([None, "gzip", "zstd", "br"]))
def test_random_bytes_get_a_4xx(door, body: bytes, content_type: str, encoding: str | None):
    _, client = door
    data = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}.get(encoding or "", bytes)(body)
    headers = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
    r = client.post("/v1/logs", content=data, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"


# -- random Arrow tables --------------------------------------------------------------------------


def _fits(value: int, t: pa.DataType) -> bool:
    bits = t.bit_width
    if pa.types.is_unsigned_integer(t):
        return 0 <= value < 2**bits
    return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def _cell(draw: Any, name: str) -> Any:
    """A value for one field: valid most of the time, else one near or beyond an edge of its rule."""
    kind, required, low, high, most = SPEC[name]
    if not required and draw(st.integers(0, 3)) == 0:
        return None
    wild = draw(st.integers(0, 24)) == 0
    if kind == "int":
        if wild:
            return draw(st.none() | st.sampled_from(EDGES))
        top = min(high, 10**12) if high is not None else 10**12
        return draw(st.integers(max(low if low is not None else 0, 0), top) | st.sampled_from([low, high]))
    if kind == "str":
        text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
        if wild:
            text = st.sampled_from(["", "   "]) | st.text(alphabet="ab模", min_size=(most or 2000) - 1,
                                                         max_size=(most or 2000) + 2)
        return draw(text)
    if kind == "bool":
        return draw(st.booleans())
    span = (dt.datetime(1990, 1, 1), dt.datetime(2110, 1, 1)) if wild else (dt.datetime(2000, 1, 1),
                                                                             dt.datetime(2099, 12, 31))
    return draw(st.datetimes(*span, timezones=st.just(dt.UTC)))


@st.composite
def tables(draw: Any) -> tuple[pa.Table, list[dict[str, Any]]]:
    n = draw(st.integers(1, 6))
    batch = next(_batches)
    names = [name for name in SPEC if SPEC[name][1] or draw(st.booleans())]
    if draw(st.integers(0, 19)) == 0:
        names.remove(draw(st.sampled_from(names)))  # a required column missing, sometimes
    extra = draw(st.sampled_from(["tenant", "Model", "requestid"])) if draw(st.integers(0, 19)) == 0 else None
    columns: dict[str, pa.Array] = {}
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name in names:
        kind = SPEC[name][0]
        values = [_cell(draw, name) for _ in range(n)]
        if name == "request_id":  # unique across examples (one lake), and within the batch unless drawn twice
            values = [v if v is None or not v.strip() else f"b{batch}-{i}-{v}"[: len(v) + 12]
                      for i, v in enumerate(values)]
            if n > 1 and draw(st.integers(0, 19)) == 0:
                values[-1] = values[0]
        if kind == "int":
            fitting = [t for t in INT_TYPES if all(v is None or _fits(v, t) for v in values)]
            column = pa.array(values, draw(st.sampled_from(fitting)))
        elif kind == "str":
            column = pa.array(values, draw(st.sampled_from([pa.string(), pa.large_string()])))
        elif kind == "bool":
            column = pa.array(values, pa.bool_())
        elif draw(st.booleans()):
            column = pa.array(values, pa.timestamp(draw(st.sampled_from(["s", "ms", "us"])), "UTC"))
            values = [None if m is None else _truncate(m, column.type.unit) for m in values]
        else:  # epoch milliseconds
            column = pa.array([None if m is None else int(m.timestamp() * 1000) for m in values], pa.int64())
            values = [None if m is None else _truncate(m, "ms") for m in values]
        columns[name] = column
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    if extra:
        columns[extra] = pa.array(["x"] * n)
        rows = [{**r, extra: "x"} for r in rows]
    return pa.table(columns), rows


def _truncate(moment: dt.datetime, unit: str) -> dt.datetime:
    if unit == "s":
        return moment.replace(microsecond=0)
    if unit == "ms":
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment


def oracle(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """SPEC.md in plain Python: the stored records of a valid batch, or None if any record is invalid."""
    stored = []
    for row in rows:
        if set(row) - set(SPEC):
            return None
        out: dict[str, Any] = {}
        for name, (kind, required, low, high, most) in SPEC.items():
            value = row.get(name)
            if value is None:
                if required:
                    return None
                value = {"quota_cost": 0, "is_stream": False}.get(name)
            elif kind == "int" and not low <= value <= high:  # type: ignore[operator]
                return None
            elif kind == "str":
                if most is not None and len(value) > most:
                    return None
                if name in ("request_id", "model") and not value.strip():
                    return None
                if name == "error_message":
                    value = value[:2000]
            elif kind == "time" and not EARLIEST <= value < LATEST:
                return None
            out[name] = value
        stored.append(out)
    ids = [r["request_id"] for r in stored]
    return stored if len(set(ids)) == len(ids) else None


@settings(max_examples=120, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(drawn=tables(), compress=st.sampled_from([None, "gzip", "zstd"]))
def test_random_arrow_tables_get_a_4xx_or_read_back_identically(door, drawn, compress: str | None):
    engine, client = door
    table, rows = drawn
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body = sink.getvalue().to_pybytes()
    body = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}.get(compress or "", bytes)(body)
    headers = {"content-type": ARROW, **({"content-encoding": compress} if compress else {})}
    r = client.post("/v1/logs", content=body, headers=headers)
    expected = oracle(rows)
    if expected is None:
        assert r.status_code == 422 and r.json()["type"] == "/problems/invalid-records", r.text
        return
    assert r.status_code == 201, r.text
    assert r.json()["records"] == len(expected)
    ids = [row["request_id"] for row in expected]
    con = engine.connect()
    try:
        got = con.sql("SELECT * EXCLUDE (date) FROM log_records WHERE list_contains($ids, request_id)",
                      params={"ids": ids}).to_arrow_table().to_pylist()
    finally:
        con.close()
    by_id = {row["request_id"]: row for row in got}
    assert sorted(by_id) == sorted(ids)
    for row in expected:
        back = by_id[row["request_id"]]
        assert {**back, "created_at": back["created_at"].astimezone(dt.UTC)} == row
