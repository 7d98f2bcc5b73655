"""Request bodies in, validated batches out: NDJSON bodies stored together are decoded and validated as one.

Decoding and validating a batch costs a few dozen Arrow calls whatever its size, about 2 ms of CPU: at
10 records a batch that fixed cost, paid per request, capped ingest near 1,600 records/s. Small NDJSON
bodies are therefore handed to the lake undecoded (`Lake.write_body`), and each group it commits passes
them through the reader and the validator once (`validate_many`); the valid table is cut back into one
batch per body. Each batch is still judged alone: when the joined table has any problem, every body of
the group is decoded and validated on its own, so errors name the rows of their own batch and a bad
batch never refuses a good one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine import decoding
from engine.errors import InvalidBatch
from engine.request_ids import hash_halves
from engine.validation import ValidBatch, validate_batch

#: Larger bodies are decoded and validated alone, on their own request's thread: their fixed cost is small beside
#: their records, and joining them would copy megabytes and hold their group's commit.
JOIN_MAX_BYTES = 1 << 20
_NEWLINE, _OPEN = ord("\n"), ord("{")
_NDJSON_TYPES = (decoding.NDJSON, "application/jsonl", "application/x-jsonlines")


@dataclass(frozen=True)
class _Body:
    data: bytes
    rows: int | None  # one record a line, every line an object: what the joined table must give back


def plain_rows(data: bytes) -> int | None:
    """The records of an NDJSON body whose every line is one JSON object (no blank lines); None otherwise.

    JSON text cannot hold a raw newline, so each line is one value: a line opening with `{` is one
    record, unless it holds two objects, which the joined table's row count then catches.
    """
    if data[:1] != b"{":
        return None
    text = np.frombuffer(data, np.uint8)  # numpy: bytes.count(b"\n{") took a quarter of the decode's time
    inner = np.flatnonzero(text[:-1] == _NEWLINE)  # newlines before the last byte
    if not (text[inner + 1] == _OPEN).all():
        return None
    return len(inner) + 1


class Intake:
    """Decodes and validates request bodies, small NDJSON ones in groups (see the module docstring).

    Args:
        max_records: the most records a body may hold to join a group (EZ_INGEST_GROUP_RECORDS).
        max_errors: how many row/field errors a refused batch lists at most.
    """

    def __init__(self, max_records: int, max_errors: int) -> None:
        self.max_records = max_records
        self.max_errors = max_errors
        self.joined = 0  # groups decoded and validated as one: what a test or a benchmark reads
        self.groups = 0  # groups of bodies validated (`validate_many` calls), and the bodies in them
        self.items = 0

    def joinable(self, data: bytes, content_type: str) -> int | None:
        """The records of a (decompressed) body that may join a group's decode (`validate_many`), or None when it
        is decoded alone (`validate`): not NDJSON, over JOIN_MAX_BYTES, or not one record a line."""
        if len(data) > JOIN_MAX_BYTES or content_type.split(";")[0].strip().lower() not in _NDJSON_TYPES:
            return None
        rows = plain_rows(data)
        return rows if rows is not None and rows < self.max_records else None

    def validate(self, data: bytes, content_type: str) -> ValidBatch:
        """Decode and validate one (decompressed) body of one of `decoding.CONTENT_TYPES`, alone.

        Raises:
            UnsupportedFormat: an unknown content type.
            MalformedBody, InvalidBatch: as `decoding.decode` and `validation.validate_batch`.
        """
        return self._one(data, content_type)

    def validate_many(self, bodies: Sequence[bytes], rows: Sequence[int] | None = None
                      ) -> list[ValidBatch | BaseException]:
        """Decode and validate NDJSON bodies as one where they allow it: one batch, or one refusal, per body.

        `rows`: each body's records as `joinable` counted them, when it did (they are not counted again).
        """
        self.groups += 1
        self.items += len(bodies)
        counts = rows if rows is not None else [plain_rows(data) for data in bodies]
        return self._validate_group([_Body(data, n) for data, n in zip(bodies, counts, strict=True)])

    def _one(self, data: bytes, content_type: str = decoding.NDJSON) -> ValidBatch:
        table, problems = decoding.decode(data, content_type)
        return validate_batch(table, decode_errors=problems, max_errors=self.max_errors)

    def _validate_group(self, bodies: Sequence[_Body]) -> list[ValidBatch | BaseException]:
        if len(bodies) > 1:
            joined = self._joined(bodies)
            if joined is not None:
                return joined
        answers: list[ValidBatch | BaseException] = []
        for body in bodies:
            try:
                answers.append(self._one(body.data))
            except Exception as exc:  # each body's own refusal goes to its own caller
                answers.append(exc)
        return answers

    def _joined(self, bodies: Sequence[_Body]) -> list[ValidBatch | BaseException] | None:
        """Every body's batch from one decode and one validation; None if any body must be judged alone."""
        rows = [body.rows for body in bodies if body.rows is not None]
        if len(rows) != len(bodies):
            return None
        data = b"".join(body.data if body.data.endswith(b"\n") else body.data + b"\n" for body in bodies)
        table, problems = decoding.decode_ndjson(data)
        if problems or table.num_rows != sum(rows):
            return None
        try:
            batch = validate_batch(table, max_errors=self.max_errors, hash_ids=False)
        except InvalidBatch:
            return None
        if batch.truncated:  # which batch had its error_message cut: counted per batch, alone
            return None
        self.joined += 1
        # Hashed as one column too: per batch, numpy's fixed cost per call would outweigh ten ids' hashing.
        first, second = hash_halves(batch.table.column("request_id"))
        answers: list[ValidBatch | BaseException] = []
        start = 0
        for n in rows:
            end = start + n
            answers.append(ValidBatch.hashed(batch.table.slice(start, n), (first[start:end], second[start:end]),
                                             max_errors=self.max_errors))
            start = end
        return answers

