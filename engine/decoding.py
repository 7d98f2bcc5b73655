"""Readers: bytes and files in, loosely typed Arrow tables out, ready for `validation.validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from engine.errors import MalformedBody, RecordError, UnsupportedFormat
from engine.schema import FIELD_BY_NAME, FIELDS, TIMESTAMP
from engine.validation import coerce

NDJSON = "application/x-ndjson"
JSON = "application/json"
ARROW = "application/vnd.apache.arrow.stream"
CONTENT_TYPES = (NDJSON, JSON, ARROW)


def _wire_schema(created_at: pa.DataType) -> pa.Schema:
    # Integers are read as int64 so that an out-of-range value reaches the validator, which can
    # name its row, instead of failing the whole parse.
    def wire(t: pa.DataType) -> pa.DataType:
        return pa.int64() if pa.types.is_integer(t) else t

    return pa.schema([(f.name, created_at if f.name == "created_at" else wire(f.type)) for f in FIELDS])


_FAST_SCHEMAS = (_wire_schema(pa.string()), _wire_schema(pa.int64()))


def decode(body: bytes, content_type: str) -> tuple[pa.Table, list[RecordError]]:
    """Decode a request body of one of CONTENT_TYPES into a table and the problems found on the way."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in (NDJSON, "application/jsonl", "application/x-jsonlines"):
        return decode_ndjson(body)
    if kind == JSON:
        return decode_json(body)
    if kind == ARROW:
        return decode_arrow(body), []
    raise UnsupportedFormat(f"unsupported content type {content_type!r}; send one of {', '.join(CONTENT_TYPES)}")


def decode_ndjson(body: bytes) -> tuple[pa.Table, list[RecordError]]:
    """NDJSON, one record a line; blank lines are skipped and do not count as rows."""
    if not body or body.isspace():  # isspace stops at the first other byte; strip() would copy
        return pa.table({}), []
    for schema in _FAST_SCHEMAS:
        # The C++ reader takes well-formed batches at hundreds of MB/s; anything unusual (mixed
        # types, unknown fields, bad JSON) goes to the slow path that can say which row is wrong.
        try:
            opts = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
            return pjson.read_json(pa.BufferReader(body), parse_options=opts), []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    records: list[Any] = []
    errors: list[RecordError] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            records.append(None)
            errors.append(RecordError(len(records), None, f"invalid JSON: {exc}"))
    table, more = records_to_table(records, skip={e.row - 1 for e in errors})
    return table, errors + more


def decode_json(body: bytes) -> tuple[pa.Table, list[RecordError]]:
    """A JSON array of records (a single object is taken as a batch of one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody([RecordError(0, None, f"invalid JSON: {exc}")]) from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise MalformedBody([RecordError(0, None, "expected a JSON array of records")])
    return records_to_table(data)


def decode_arrow(body: bytes) -> pa.Table:
    """An Arrow IPC stream."""
    try:
        return pa.ipc.open_stream(body).read_all()
    except pa.ArrowInvalid as exc:
        raise MalformedBody([RecordError(0, None, f"invalid Arrow IPC stream: {exc}")]) from exc


def records_to_table(records: list[Any], skip: set[int] | None = None) -> tuple[pa.Table, list[RecordError]]:
    """Python dicts (from JSON) to columns; rows whose values do not fit are named, not guessed."""
    skip = skip or set()
    errors: list[RecordError] = []
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        if i in skip:
            rows.append({})
        elif not isinstance(rec, dict):
            errors.append(RecordError(i + 1, None, f"expected a JSON object, got {type(rec).__name__}"))
            rows.append({})
        else:
            for name in rec.keys() - FIELD_BY_NAME.keys():
                errors.append(RecordError(i + 1, name, "unknown field"))
            rows.append(rec)
    columns: dict[str, pa.Array] = {}
    for field in FIELDS:
        values = [r.get(field.name) for r in rows]
        try:
            columns[field.name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[field.name], problems = _coerce_each(field.name, values)
            errors.extend(RecordError(i + 1, field.name, reason) for i, reason in problems)
    return pa.table(columns), errors


def _coerce_each(name: str, values: list[Any]) -> tuple[pa.Array, list[tuple[int, str]]]:
    """A column of mixed JSON types: coerce value by value with the validator's own rules."""
    field = FIELD_BY_NAME[name]
    out: list[Any] = []
    problems: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        try:
            cell, bad = coerce(field, pa.array([value]))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cell, bad = pa.nulls(1, field.type), [(0, f"expected {field.type}, got {type(value).__name__}")]
        out.append(cell[0].as_py())
        problems.extend((i, reason) for _, reason in bad)
    return pa.array(out, TIMESTAMP if name == "created_at" else field.type), problems


def read_file(path: Path, data: bytes) -> tuple[pa.Table, list[RecordError]]:
    """Decode a file's bytes by its extension: .ndjson/.jsonl, .json, .csv, .parquet, .arrow."""
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        return decode_ndjson(data)
    if suffix == ".json":
        # A .json file may be a JSON array or, as often exported, JSON lines.
        return decode_json(data) if data.lstrip()[:1] in (b"[", b"") else decode_ndjson(data)
    if suffix == ".csv":
        return _read_csv(data), []
    if suffix == ".parquet":
        return pq.read_table(pa.BufferReader(data)), []
    if suffix in (".arrow", ".arrows", ".ipc"):
        return decode_arrow(data), []
    raise UnsupportedFormat(f"{path}: unsupported file type {suffix!r}; use .ndjson, .jsonl, .json, .csv or .parquet")


def _read_csv(data: bytes) -> pa.Table:
    # Every column as text: the validator does the typing, so a bad cell is reported by row
    # instead of failing the whole file; empty cells mean null.
    types = {f.name: pa.string() for f in FIELDS}
    convert = pcsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    return pcsv.read_csv(pa.BufferReader(data), convert_options=convert)
