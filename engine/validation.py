"""One validation path for every way in: loosely typed Arrow columns in, a LOG_RECORD_SCHEMA table out.

Readers (HTTP bodies, NDJSON, JSON, CSV, Parquet files) only decode; they hand whatever Arrow types
they found to `validate`, which coerces where the meaning is unambiguous and checks every rule of
SPEC.md column by column, so a million-row batch costs a few vectorised passes, not a Python loop.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InvalidBatch, RecordError
from engine.request_ids import HashSet
from engine.schema import FIELD_BY_NAME, FIELD_NAMES, FIELDS, LOG_RECORD_SCHEMA, TIMESTAMP, Field

# Epoch seconds passed where milliseconds are expected land in 1970: refused instead of written to a
# partition half a century away.
from engine.times import EARLIEST, LATEST

_INT_TEXT = r"^\s*[+-]?\d+\s*$"
INT64 = (-(2**63), 2**63 - 1)

Problems = list[tuple[int, str]]


#: Hashes request_ids beside the rest of the work (numpy releases the GIL): see `ValidBatch.ids`.
_HASHING = ThreadPoolExecutor(2, thread_name_prefix="ezstats-request-ids")


@dataclass(frozen=True)
class ValidBatch:
    """A batch that passed validation: its records, what was cut to fit, and its request_id hashes.

    The hashes (and the check that no request_id appears twice) are computed in the background while the
    caller goes on, e.g. encoding the batch: read `ids` when they are needed.
    """

    table: pa.Table
    #: Records whose error_message was cut to its maximum length.
    truncated: int
    _ids: Future[HashSet]

    @classmethod
    def of(cls, table: pa.Table, truncated: int = 0, max_errors: int = 100) -> ValidBatch:
        """A batch of exactly LOG_RECORD_SCHEMA whose request_ids are hashed in the background."""
        return cls(table, truncated, _HASHING.submit(unique_ids, table.column("request_id"), max_errors))

    @classmethod
    def hashed(cls, table: pa.Table, halves: tuple[np.ndarray, np.ndarray], truncated: int = 0,
               max_errors: int = 100) -> ValidBatch:
        """A batch whose request_ids were hashed already (`request_ids.hash_halves`, in row order), e.g. with the
        other batches of its group: sorted and checked for repeats now, on the caller's thread."""
        done: Future[HashSet] = Future()
        try:
            done.set_result(_checked(HashSet.of_halves(*halves), max_errors))
        except InvalidBatch as exc:
            done.set_exception(exc)
        return cls(table, truncated, done)

    @property
    def ids(self) -> HashSet:
        """The request_ids' hashes, sorted, with their rows (`engine.request_ids`): what the lake looks up.

        Raises:
            InvalidBatch: a request_id appears twice in the batch (both rows named).
        """
        return self._ids.result()


def unique_ids(column: pa.Array | pa.ChunkedArray, max_errors: int = 100) -> HashSet:
    """The hashes of a batch's request_ids (no nulls).

    Raises:
        InvalidBatch: some appear twice; each error names the later row and the first.
    """
    return _checked(HashSet.of_column(column), max_errors)


def _checked(ids: HashSet, max_errors: int) -> HashSet:
    errors = _duplicate_errors(ids)
    if errors:
        raise InvalidBatch(errors[:max_errors], total=len(errors))
    return ids


def _duplicate_errors(ids: HashSet, skip: set[int] | None = None) -> list[RecordError]:
    skip = skip or set()
    return [RecordError(later + 1, "request_id", f"duplicate of row {first + 1}: a request_id counts once")
            for first, later in ids.duplicates() if first not in skip and later not in skip]


def validate(
    table: pa.Table, *, decode_errors: Sequence[RecordError] = (), max_errors: int = 100
) -> pa.Table:
    """Coerce and check a decoded batch against SPEC.md; see `validate_batch`.

    Returns:
        The batch as a table of exactly LOG_RECORD_SCHEMA, defaults filled in.
    """
    return validate_batch(table, decode_errors=decode_errors, max_errors=max_errors).table


def validate_batch(
    table: pa.Table, *, decode_errors: Sequence[RecordError] = (), max_errors: int = 100, hash_ids: bool = True
) -> ValidBatch:
    """Coerce and check a decoded batch against SPEC.md and the documented string lengths.

    Args:
        table: decoded records, any Arrow types; missing optional columns are allowed.
        decode_errors: problems the reader already found (their cells arrive as null).
        max_errors: how many row/field errors to list at most (the total is always counted).
        hash_ids: hash the request_ids (False: the caller cuts the table into batches and hashes each; the
            result's `ids` must not be read).

    Returns:
        The valid batch: exactly LOG_RECORD_SCHEMA, defaults filled in, error_messages over their length
        cut (and counted); its request_ids hashed in the background (`ValidBatch.ids`).

    Raises:
        InvalidBatch: the batch is empty, a column appears twice, or a record breaks a rule (invalid
            UTF-8, a string too long, a value out of its type or range); each error names row, field and
            reason. A request_id that an earlier row of the batch has is named here when the batch has
            other errors too, else when `ValidBatch.ids` is read.
    """
    twice = sorted(name for name, count in Counter(table.column_names).items() if count > 1)
    if twice:
        raise InvalidBatch([RecordError(0, name, "the column appears more than once") for name in twice])
    if table.num_rows == 0 and not decode_errors:
        raise InvalidBatch([RecordError(0, None, "the batch holds no records")])
    errors = list(decode_errors)
    unknown = [name for name in table.column_names if name not in FIELD_BY_NAME]
    for name in unknown:
        errors.append(RecordError(_first_set_row(table.column(name)), name, _unknown_reason(name)))
    columns = []
    truncated = 0
    n = table.num_rows
    hashing: Future[HashSet] | None = None
    for field in FIELDS:
        raw = table.column(field.name) if field.name in table.column_names else pa.nulls(n)
        column, problems = coerce(field, raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw)
        if field.max_length is not None:
            column, cut, too_long = _fit(field, column)
            truncated += cut
            problems += too_long
        seen = {i for i, _ in problems} | {e.row - 1 for e in decode_errors if e.field in (field.name, None)}
        problems += check_rules(field, column, skip=seen)
        errors.extend(RecordError(i + 1, field.name, reason) for i, reason in problems)
        if field.default is not None:
            column = column.fill_null(pa.scalar(field.default, field.type))
        columns.append(column)
        if field.name == "request_id" and hash_ids and not errors:  # the usual case: hash while checking the rest
            hashing = _HASHING.submit(unique_ids, column, max_errors)
    if errors:
        bad_ids = {e.row - 1 for e in errors if e.field in ("request_id", None)}
        request_ids = columns[FIELD_NAMES.index("request_id")].fill_null("")
        errors.extend(_duplicate_errors(HashSet.of_column(request_ids), bad_ids))
        errors.sort(key=lambda e: (e.row, FIELD_NAMES.index(e.field) if e.field in FIELD_NAMES else -1))
        raise InvalidBatch(errors[:max_errors], total=len(errors))
    valid = pa.Table.from_arrays(columns, schema=LOG_RECORD_SCHEMA)
    if not hash_ids:
        unhashed: Future[HashSet] = Future()
        unhashed.set_exception(RuntimeError("validated with hash_ids=False: hash the batches cut from it"))
        return ValidBatch(valid, truncated, unhashed)
    if hashing is None:
        return ValidBatch.of(valid, truncated, max_errors)
    return ValidBatch(valid, truncated, hashing)


def _fit(field: Field, column: pa.Array) -> tuple[pa.Array, int, Problems]:
    """Check a string column's lengths (in characters): refuse longer values, or cut them where the field says
    so. Returns the column, how many values were cut, and the refused rows."""
    limit = field.max_length
    assert limit is not None
    if _longest(column) <= limit:  # bytes >= characters: nothing can be too long
        return column, 0, []
    over = pc.greater(pc.utf8_length(column), limit)
    rows = _rows(over)
    if not rows:
        return column, 0, []
    if field.truncate:
        return pc.if_else(over, pc.utf8_slice_codeunits(column, 0, limit), column), len(rows), []
    return column, 0, [(i, f"is longer than {limit} characters") for i in rows]


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
        if not pa.types.is_string(arr.type):
            return _expect(arr, False, "a string")
        return _utf8(arr)
    if pa.types.is_boolean(target):
        return _to_bool(arr)
    if pa.types.is_timestamp(target):
        return _to_timestamp(arr)
    return _to_int(field, arr)


def _longest(column: pa.Array) -> int:
    """The most bytes any value of a string column holds (null slots hold none), read off its offsets."""
    if len(column) == 0 or pa.types.is_null(column.type):
        return 0
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset: column.offset + len(column) + 1]
    return int(np.diff(offsets).max())


def _utf8(arr: pa.Array) -> tuple[pa.Array, Problems]:
    """Strings that are not valid UTF-8 (Arrow IPC and Parquet can carry any bytes as a string) become null and
    are named: stored, they would make every later read of their day fail."""
    try:
        arr.validate(full=True)  # a vectorised UTF-8 check
        return arr, []
    except pa.ArrowInvalid:
        pass
    bad: Problems = []
    texts: list[str | None] = []
    for i, value in enumerate(arr.cast(pa.binary()).to_pylist()):
        try:
            texts.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            texts.append(None)
            bad.append((i, f"is not valid UTF-8 (byte {exc.start}: {value[exc.start:exc.start + 4]!r})"))
    # Rebuilt from Python strings: Arrow kernels may still read the bytes behind a value set to null.
    return pa.array(texts, pa.string()), bad


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
        arr, more = _digits(pc.if_else(ok, arr, pa.scalar(None, pa.string())))
        problems += more
    elif pa.types.is_floating(arr.type):
        whole = pc.equal(pc.floor(arr), arr)
        problems = [(i, f"expected an integer, got {_show(arr[i])}") for i in _rows(pc.invert(whole))]
        arr = pc.if_else(whole, arr, pa.scalar(None, arr.type))
        # Doubles are exact integers up to 2**53; beyond, a float cannot say which integer was meant.
        fits = pc.less_equal(pc.abs(arr), 2.0**53)
        problems += [(i, f"is too large for a floating-point integer, got {_show(arr[i])}")
                     for i in _rows(pc.invert(fits))]
        arr = pc.if_else(fits, arr, pa.scalar(None, arr.type)).cast(pa.int64())
    elif pa.types.is_boolean(arr.type) or not pa.types.is_integer(arr.type):
        return _expect(arr, False, "an integer")
    if arr.type == field.type:
        return arr, problems
    low, high = _int_range(field.type) or INT64
    if _within(arr, (low, high)):
        return arr.cast(field.type), problems
    if pa.types.is_uint64(arr.type):  # compare before casting, so a value beyond int64 is named, not refused whole
        beyond = pc.greater(arr, pa.scalar(INT64[1], pa.uint64()))
        problems += [(i, f"does not fit {field.type}, got {_show(arr[i])}") for i in _rows(beyond)]
        arr = pc.if_else(beyond, pa.scalar(None, pa.uint64()), arr)
    wide = arr.cast(pa.int64())
    out = pc.or_(pc.less(wide, low), pc.greater(wide, high))
    problems += [(i, f"does not fit {field.type}, got {_show(wide[i])}") for i in _rows(out)]
    return pc.if_else(out, pa.scalar(None, pa.int64()), wide).cast(field.type), problems


def _digits(text: pa.Array) -> tuple[pa.Array, Problems]:
    """Integer text (already matched by _INT_TEXT) as int64; values beyond int64 become null and are named."""
    try:
        return text.cast(pa.int64()), []
    except pa.ArrowInvalid:
        values = [None if t is None else int(t) for t in text.to_pylist()]
        big = {i for i, v in enumerate(values) if v is not None and not INT64[0] <= v <= INT64[1]}
        problems = [(i, f"does not fit int64, got {_show(text[i])}") for i in sorted(big)]
        return pa.array([None if i in big else v for i, v in enumerate(values)], pa.int64()), problems


def _within(arr: pa.Array, bounds: tuple[int, int]) -> bool:
    stats = pc.min_max(arr)
    lo, hi = stats["min"].as_py(), stats["max"].as_py()
    return lo is None or (bounds[0] <= lo and hi <= bounds[1])


def _int_range(target: pa.DataType) -> tuple[int, int] | None:
    if target == pa.int16():
        return (-(2**15), 2**15 - 1)
    if target == pa.int32():
        return (-(2**31), 2**31 - 1)
    if target == pa.int64():
        return INT64
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
        try:
            return arr.cast(TIMESTAMP), []
        except pa.ArrowInvalid:  # seconds or milliseconds beyond what microseconds can hold
            wide = arr.cast(pa.int64())
            per_us = {"s": 1_000_000, "ms": 1000}[arr.type.unit]
            limit = (2**63 - 1) // per_us
            fits = pc.and_(pc.greater_equal(wide, -limit), pc.less_equal(wide, limit))
            problems = [(i, f"is out of range, got {_show(wide[i])}") for i in _rows(pc.invert(fits))]
            return pc.if_else(fits, arr, pa.scalar(None, arr.type)).cast(TIMESTAMP), problems
    if pa.types.is_integer(arr.type):
        if pa.types.is_unsigned_integer(arr.type):
            huge = pc.greater(arr, pa.scalar(min(2**53, 2**arr.type.bit_width - 1), arr.type))
            problems_u = [(i, f"epoch milliseconds out of range, got {_show(arr[i])}") for i in _rows(huge)]
            ms, more = _to_timestamp(pc.if_else(huge, pa.scalar(None, arr.type), arr).cast(pa.int64()))
            return ms, problems_u + more
        wide = arr.cast(pa.int64())
        sane = pc.and_(pc.greater_equal(wide, -(2**53)), pc.less_equal(wide, 2**53))
        problems = [(i, f"epoch milliseconds out of range, got {_show(arr[i])}") for i in _rows(pc.invert(sane))]
        ms = pc.if_else(sane, wide, pa.scalar(None, pa.int64()))
        return pc.multiply(ms, 1000).cast(TIMESTAMP), problems
    if pa.types.is_string(arr.type):
        digits = pc.match_substring_regex(arr, _INT_TEXT)
        if pc.any(digits).as_py():
            ints, problems = _digits(pc.if_else(digits, arr, pa.scalar(None, pa.string())))
            as_ms, more_ms = _to_timestamp(ints)
            problems += more_ms
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
