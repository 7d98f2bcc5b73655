"""One validation path for every way in: loosely typed Arrow columns in, a LOG_RECORD_SCHEMA table out.

Readers (HTTP bodies, NDJSON, JSON, CSV, Parquet files) only decode; they hand whatever Arrow types
they found to `validate`, which coerces where the meaning is unambiguous and checks every rule of
SPEC.md column by column, so a million-row batch costs a few vectorised passes, not a Python loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InvalidBatch, RecordError
from engine.schema import FIELD_BY_NAME, FIELD_NAMES, FIELDS, LOG_RECORD_SCHEMA, TIMESTAMP, Field

# Epoch seconds passed where milliseconds are expected land in 1970; refuse them instead of
# writing a partition half a century away.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
_INT_TEXT = r"^\s*[+-]?\d+\s*$"

Problems = list[tuple[int, str]]


def validate(
    table: pa.Table, *, decode_errors: Sequence[RecordError] = (), max_errors: int = 100
) -> pa.Table:
    """Coerce and check a decoded batch against SPEC.md.

    Args:
        table: decoded records, any Arrow types; missing optional columns are allowed.
        decode_errors: problems the reader already found (their cells arrive as null).
        max_errors: how many row/field errors to list at most (the total is always counted).

    Returns:
        The batch as a table of exactly LOG_RECORD_SCHEMA, defaults filled in.

    Raises:
        InvalidBatch: any record breaks any rule; the error names row, field and reason.
    """
    errors = list(decode_errors)
    unknown = [name for name in table.column_names if name not in FIELD_BY_NAME]
    for name in unknown:
        errors.append(RecordError(_first_set_row(table.column(name)), name, _unknown_reason(name)))
    columns = []
    n = table.num_rows
    for field in FIELDS:
        raw = table.column(field.name) if field.name in table.column_names else pa.nulls(n)
        column, problems = coerce(field, raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw)
        seen = {i for i, _ in problems} | {e.row - 1 for e in decode_errors if e.field in (field.name, None)}
        problems += check_rules(field, column, skip=seen)
        errors.extend(RecordError(i + 1, field.name, reason) for i, reason in problems)
        if field.default is not None:
            column = column.fill_null(pa.scalar(field.default, field.type))
        columns.append(column)
    if errors:
        errors.sort(key=lambda e: (e.row, FIELD_NAMES.index(e.field) if e.field in FIELD_NAMES else -1))
        raise InvalidBatch(errors[:max_errors], total=len(errors))
    return pa.Table.from_arrays(columns, schema=LOG_RECORD_SCHEMA)


def coerce(field: Field, arr: pa.Array) -> tuple[pa.Array, Problems]:
    """Convert one column to the field's Arrow type; values that cannot be converted become null."""
    out, problems = _coerce(field, arr)
    return (pa.nulls(len(out), field.type) if pa.types.is_null(out.type) else out), problems


def _coerce(field: Field, arr: pa.Array) -> tuple[pa.Array, Problems]:
    if pa.types.is_null(arr.type):
        return arr, []
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    target = field.type
    if pa.types.is_string(target):
        return _expect(arr, pa.types.is_string(arr.type), "a string")
    if pa.types.is_boolean(target):
        return _to_bool(arr)
    if pa.types.is_timestamp(target):
        return _to_timestamp(arr)
    return _to_int(field, arr)


def check_rules(field: Field, column: pa.Array, skip: set[int]) -> Problems:
    """Rows of an already coerced column that break the field's SPEC rule."""
    # Each check first asks a cheap question of the whole column (null count, min/max) and builds
    # a per-row mask only when that answer shows a violation: valid batches pay almost nothing.
    checks: list[tuple[Callable[[], pa.Array], str]] = []
    if field.required and column.null_count:
        checks.append((column.is_null, "is required"))
    if field.non_empty and len(column):
        checks.append((lambda: _blank(column), "must not be empty"))
    low, high = _bounds(field)
    if low is not None or high is not None:
        stats = pc.min_max(column)
        lo, hi = stats["min"].as_py(), stats["max"].as_py()
        if lo is not None and ((low is not None and lo < low) or (high is not None and hi >= high)):
            checks.append((lambda: _outside(column, low, high), _range_reason(field)))
    problems: Problems = []
    for mask, reason in checks:
        for i in _rows(mask()):
            if i not in skip:
                skip.add(i)
                got = column[i]
                problems.append((i, reason if not got.is_valid else f"{reason}, got {_show(got)}"))
    return problems


def _bounds(field: Field) -> tuple[Any, Any]:
    """[low, high) of a field's valid values; None where unbounded."""
    if pa.types.is_timestamp(field.type):
        return EARLIEST, LATEST
    high = field.maximum + 1 if field.maximum is not None else None
    return field.minimum, high


def _range_reason(field: Field) -> str:
    if pa.types.is_timestamp(field.type):
        return "must be between 2000-01-01 and 2100-01-01 (epoch seconds given as milliseconds?)"
    if field.maximum is not None:
        return f"must be between {field.minimum} and {field.maximum}"
    return f"must be >= {field.minimum}"


def _outside(column: pa.Array, low: Any, high: Any) -> pa.Array:
    masks = []
    if low is not None:
        masks.append(pc.less(column, pa.scalar(low, column.type)))
    if high is not None:
        masks.append(pc.greater_equal(column, pa.scalar(high, column.type)))
    return masks[0] if len(masks) == 1 else pc.or_(*masks)


def _blank(column: pa.Array) -> pa.Array:
    # utf8_is_space stops at the first non-space character, far cheaper than trimming every string.
    return pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))


def _to_int(field: Field, arr: pa.Array) -> tuple[pa.Array, Problems]:
    problems: Problems = []
    if pa.types.is_string(arr.type):
        ok = pc.match_substring_regex(arr, _INT_TEXT)
        problems = [(i, f"expected an integer, got {_show(arr[i])}") for i in _rows(pc.invert(ok))]
        arr = pc.if_else(ok, arr, pa.scalar(None, pa.string())).cast(pa.int64())
    elif pa.types.is_floating(arr.type):
        whole = pc.equal(pc.floor(arr), arr)
        problems = [(i, f"expected an integer, got {_show(arr[i])}") for i in _rows(pc.invert(whole))]
        arr = pc.if_else(whole, arr, pa.scalar(None, arr.type))
        arr = pc.if_else(pc.less_equal(pc.abs(arr), 2.0**62), arr, pa.scalar(None, arr.type)).cast(pa.int64())
    elif pa.types.is_boolean(arr.type) or not pa.types.is_integer(arr.type):
        return _expect(arr, False, "an integer")
    info = _int_range(field.type)
    if arr.type == field.type:
        return arr, problems
    if info is not None and not pa.types.is_unsigned_integer(arr.type) and _within(arr, info):
        return arr.cast(field.type), problems
    if info is not None and not pa.types.is_unsigned_integer(arr.type):
        wide = arr.cast(pa.int64())
        out = pc.or_(pc.less(wide, info[0]), pc.greater(wide, info[1]))
        problems += [(i, f"does not fit {field.type}, got {_show(wide[i])}") for i in _rows(out)]
        arr = pc.if_else(out, pa.scalar(None, pa.int64()), wide)
    elif pa.types.is_unsigned_integer(arr.type):
        big = pc.greater(arr, 2**31 - 1 if info else 2**63 - 1)
        problems += [(i, f"does not fit {field.type}, got {_show(arr[i])}") for i in _rows(big)]
        arr = pc.if_else(big, pa.scalar(None, arr.type), arr)
    return arr.cast(field.type), problems


def _within(arr: pa.Array, bounds: tuple[int, int]) -> bool:
    stats = pc.min_max(arr)
    lo, hi = stats["min"].as_py(), stats["max"].as_py()
    return lo is None or (bounds[0] <= lo and hi <= bounds[1])


def _int_range(target: pa.DataType) -> tuple[int, int] | None:
    if target == pa.int16():
        return (-(2**15), 2**15 - 1)
    if target == pa.int32():
        return (-(2**31), 2**31 - 1)
    return None


def _to_bool(arr: pa.Array) -> tuple[pa.Array, Problems]:
    if pa.types.is_boolean(arr.type):
        return arr, []
    if pa.types.is_string(arr.type):
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        truthy = pc.is_in(lowered, pa.array(["true", "1"]))
        known = pc.or_(truthy, pc.is_in(lowered, pa.array(["false", "0"])))
        problems = [(i, f"expected true or false, got {_show(arr[i])}") for i in _rows(pc.invert(known))]
        return pc.if_else(known, truthy, pa.scalar(None, pa.bool_())), problems
    return _expect(arr, False, "true or false")


def _to_timestamp(arr: pa.Array) -> tuple[pa.Array, Problems]:
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            return _expect(arr, False, "a UTC timestamp (a timestamp column without time zone is ambiguous)")
        if arr.type.unit == "ns":
            nanos = arr.cast(pa.int64())
            micros = pc.divide(nanos, 1000)
            exact = pc.equal(pc.multiply(micros, 1000), nanos)
            problems = [(i, "has sub-microsecond precision") for i in _rows(pc.invert(exact))]
            return pc.if_else(exact, micros, pa.scalar(None, pa.int64())).cast(TIMESTAMP), problems
        return arr.cast(TIMESTAMP), []
    if pa.types.is_integer(arr.type):
        wide = arr.cast(pa.int64())
        sane = pc.less_equal(pc.abs(wide), 2**53)
        problems = [(i, f"epoch milliseconds out of range, got {_show(arr[i])}") for i in _rows(pc.invert(sane))]
        ms = pc.if_else(sane, wide, pa.scalar(None, pa.int64()))
        return pc.multiply(ms, 1000).cast(TIMESTAMP), problems
    if pa.types.is_string(arr.type):
        digits = pc.match_substring_regex(arr, _INT_TEXT)
        if pc.any(digits).as_py():
            as_ms, problems = _to_timestamp(pc.if_else(digits, arr, pa.scalar(None, pa.string())).cast(pa.int64()))
            as_text, more = _to_timestamp(pc.if_else(digits, pa.scalar(None, pa.string()), arr))
            return pc.if_else(digits, as_ms, as_text), problems + more
        try:
            return arr.cast(TIMESTAMP), []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _parse_each(arr)
    return _expect(arr, False, "an RFC 3339 timestamp or epoch milliseconds")


def _parse_each(arr: pa.Array) -> tuple[pa.Array, Problems]:
    """Slow path for a column with unparsable text: find exactly which rows are wrong."""
    values: list[dt.datetime | None] = []
    problems: Problems = []
    for i, text in enumerate(arr.to_pylist()):
        try:
            values.append(None if text is None else pa.scalar(text).cast(TIMESTAMP).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values.append(None)
            problems.append((i, f"expected an RFC 3339 timestamp with offset or epoch milliseconds, got {text!r}"))
    return pa.array(values, TIMESTAMP), problems


def _expect(arr: pa.Array, ok: bool, what: str) -> tuple[pa.Array, Problems]:
    if ok:
        return arr, []
    kind = _kind(arr.type)
    return pa.nulls(len(arr)), [(i, f"expected {what}, got {kind}") for i in _rows(arr.is_valid())]


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "a boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "a number"
    if pa.types.is_string(t):
        return "a string"
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return "an object"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "an array"
    return str(t)


def _rows(mask: pa.Array | pa.ChunkedArray) -> list[int]:
    """Indices where a boolean mask is true (nulls count as false)."""
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def _first_set_row(col: pa.ChunkedArray) -> int:
    rows = _rows(col.is_valid())
    return rows[0] + 1 if rows else 1


def _unknown_reason(name: str) -> str:
    return f"unknown field (allowed: {', '.join(FIELD_NAMES)})"


def _show(value: pa.Scalar) -> str:
    v = value.as_py()
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."
