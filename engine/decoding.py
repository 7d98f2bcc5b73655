"""Readers: bytes and files in, loosely typed Arrow tables out, ready for `validation.validate`."""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import zstandard

from engine.errors import InvalidBatch, MalformedBody, PayloadTooLarge, RecordError, UnsupportedFormat
from engine.schema import FIELD_BY_NAME, FIELDS, TIMESTAMP
from engine.validation import coerce

NDJSON = "application/x-ndjson"
JSON = "application/json"
ARROW = "application/vnd.apache.arrow.stream"
CONTENT_TYPES = (NDJSON, JSON, ARROW)
#: Content-Encodings an ingest body may have (besides none, `identity`).
ENCODINGS = ("gzip", "zstd")
_CHUNK = 1 << 20
#: Block sizes of the JSON reader (see `decode_ndjson`).
_BLOCK_MIN, _BLOCK_MAX = 256 << 10, 1 << 20
_CORES = os.cpu_count() or 1


def decompress(data: bytes, encoding: str | None, limit: int | None = None) -> bytes:
    """Undo a body's Content-Encoding (`gzip`, `zstd`, or a comma-separated list applied in that order).

    The limit applies to the decompressed size, checked while decompressing: a small body that inflates to
    gigabytes (a decompression bomb) is refused after `limit` bytes, not held in memory.

    Raises:
        UnsupportedFormat: an encoding other than gzip, zstd or identity.
        PayloadTooLarge: the decompressed body is over `limit` bytes.
        MalformedBody: the data is not valid for its encoding (corrupt or truncated).
    """
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):  # the last coding listed was applied last
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            data = _gunzip(data, limit)
        elif coding == "zstd":
            data = _unzstd(data, limit)
        else:
            raise UnsupportedFormat(f"unsupported Content-Encoding {coding!r}; send {', '.join(ENCODINGS)} or none")
    if limit is not None:
        check_size(data, limit)
    return data


def check_size(data: bytes, limit: int) -> None:
    """Raises PayloadTooLarge for a (decompressed) body over `limit` bytes."""
    if len(data) > limit:
        raise PayloadTooLarge(f"body of {len(data)} bytes is over the limit of {limit} bytes (EZ_MAX_BODY_BYTES)")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the decompressed body is over the limit of {limit} bytes (EZ_MAX_BODY_BYTES)")


def _gunzip(data: bytes, limit: int | None) -> bytes:
    out = bytearray()
    rest = data
    try:
        while rest:
            member = zlib.decompressobj(wbits=31)
            pending = rest
            while pending:
                room = _CHUNK if limit is None else min(_CHUNK, limit + 1 - len(out))
                out += member.decompress(pending, room)
                if limit is not None and len(out) > limit:
                    raise _too_large(limit)
                pending = member.unconsumed_tail
                if member.eof:
                    break
            if not member.eof:
                raise MalformedBody([RecordError(0, None, "the gzip body is truncated")])
            rest = member.unused_data
            if rest and not rest.strip(b"\0"):  # padding after the last member
                break
    except zlib.error as exc:
        raise MalformedBody([RecordError(0, None, f"the body is not valid gzip: {exc}")]) from None
    return bytes(out)


def _unzstd(data: bytes, limit: int | None) -> bytes:
    try:
        if limit is not None:
            # First count, keeping nothing: the one-shot decompression below cannot be bounded.
            size = 0
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
                while chunk := reader.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
        out = bytearray()
        rest = data
        while rest:
            frame = zstandard.ZstdDecompressor().decompressobj()
            out += frame.decompress(rest)
            if not frame.eof:
                raise MalformedBody([RecordError(0, None, "the zstd body is truncated")])
            rest = frame.unused_data
    except zstandard.ZstdError as exc:
        raise MalformedBody([RecordError(0, None, f"the body is not valid zstd: {exc}")]) from None
    return bytes(out)


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
    # The reader parses one block a thread: a body of a few hundred KB (a group of small batches) in one 1 MiB
    # block kept one core idle (4.8 ms for 615 KB, 3.2 ms in two blocks).
    blocks = pjson.ReadOptions(block_size=min(_BLOCK_MAX, max(_BLOCK_MIN, -(-len(body) // _CORES))))
    for schema in _FAST_SCHEMAS:
        # The C++ reader takes well-formed batches at hundreds of MB/s; anything unusual (mixed
        # types, unknown fields, bad JSON, a record longer than a block) goes to the slow path that can say
        # which row is wrong.
        try:
            opts = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
            return pjson.read_json(pa.BufferReader(body), read_options=blocks, parse_options=opts), []
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
            found = _bad_text(line, len(records) + 1)
            records.append(None)
            errors.extend(found or [RecordError(len(records), None, f"invalid JSON: {exc}")])
    table, more = records_to_table(records, skip={e.row - 1 for e in errors})
    return table, errors + more


def _bad_text(text: bytes, first_row: int) -> list[RecordError]:
    """Where JSON that orjson refused holds invalid UTF-8 (or lone surrogates): (row, field) of each such value.

    The text is read again, leniently, only to name the values; they are refused either way.
    """
    try:
        data = json.loads(text.decode("utf-8", "surrogateescape"))
    except ValueError:
        return []  # not a text problem: the JSON itself is malformed
    records = data if isinstance(data, list) else [data]
    found = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            continue
        for name, value in record.items():
            if _has_surrogates(name) or (isinstance(value, str) and _has_surrogates(value)):
                field = name if not _has_surrogates(name) else None
                found.append(RecordError(first_row + i, field, "is not valid UTF-8 text"))
    return found


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def decode_json(body: bytes) -> tuple[pa.Table, list[RecordError]]:
    """A JSON array of records (a single object is taken as a batch of one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        found = _bad_text(body, 1)
        if found:
            raise InvalidBatch(found) from None
        raise MalformedBody([RecordError(0, None, f"invalid JSON: {exc}")]) from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise MalformedBody([RecordError(0, None, "expected a JSON array of records")])
    return records_to_table(data)


def decode_arrow(body: bytes) -> pa.Table:
    """An Arrow IPC stream."""
    try:
        table = pa.ipc.open_stream(body).read_all()
        table.validate()  # buffers that do not hold what the schema says (a truncated or forged stream)
        return table
    except (pa.ArrowException, OSError, ValueError) as exc:  # ArrowInvalid, ArrowIOError on a truncated stream
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
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
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
        except OverflowError:  # an integer beyond 64 bits
            cell, bad = pa.nulls(1, field.type), [(0, f"does not fit {field.type}, got {value}")]
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cell, bad = pa.nulls(1, field.type), [(0, f"expected {field.type}, got {type(value).__name__}")]
        out.append(cell[0].as_py())
        problems.extend((i, reason) for _, reason in bad)
    return pa.array(out, TIMESTAMP if name == "created_at" else field.type), problems


def read_file(path: Path, data: bytes) -> tuple[pa.Table, list[RecordError]]:
    """Decode a file's bytes by its extension: .ndjson/.jsonl, .json, .csv, .parquet, .arrow, each optionally
    compressed as .gz or .zst."""
    suffix = path.suffix.lower()
    if suffix in (".gz", ".zst"):
        return read_file(path.with_suffix(""), decompress(data, "gzip" if suffix == ".gz" else "zstd"))
    if suffix in (".ndjson", ".jsonl"):
        return decode_ndjson(data)
    if suffix == ".json":
        # A .json file may be a JSON array or, as often exported, JSON lines.
        return decode_json(data) if data.lstrip()[:1] in (b"[", b"") else decode_ndjson(data)
    if suffix == ".csv":
        return _read_csv(data), []
    if suffix == ".parquet":
        # ParquetFile, not read_table: a hive-looking file name must not add columns.
        return pq.ParquetFile(pa.BufferReader(data)).read(), []
    if suffix in (".arrow", ".arrows", ".ipc"):
        return decode_arrow(data), []
    raise UnsupportedFormat(f"{path}: unsupported file type {suffix!r}; use .ndjson, .jsonl, .json, .csv or .parquet")


def _read_csv(data: bytes) -> pa.Table:
    # Every column as text: the validator does the typing, so a bad cell is reported by row
    # instead of failing the whole file; empty cells mean null.
    types = {f.name: pa.string() for f in FIELDS}
    # Bytes that are not UTF-8 are kept as they are, for the validator to name their row and field.
    convert = pcsv.ConvertOptions(column_types=types, strings_can_be_null=True, check_utf8=False)
    return pcsv.read_csv(pa.BufferReader(data), convert_options=convert)
