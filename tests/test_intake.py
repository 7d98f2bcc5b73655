"""Intake: NDJSON bodies that arrive together are decoded and validated as one table, yet each batch is judged,
numbered and stored as if it had come alone."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from engine import Engine
from engine.errors import InvalidBatch
from engine.intake import Intake, plain_rows
from engine.validation import ValidBatch
from tests.conftest import make_record


def ndjson(records: list[dict[str, Any]], end: bytes = b"\n") -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in records) + end


@pytest.fixture
def intake() -> Intake:
    return Intake(max_records=100_000, max_errors=100)


def alone(intake: Intake, body: bytes) -> pa.Table:
    answer = intake.validate_many([body])[0]
    assert isinstance(answer, ValidBatch)
    return answer.table


def test_plain_rows_counts_one_object_a_line_and_refuses_anything_else():
    assert plain_rows(b'{"a":1}\n{"a":2}\n') == 2
    assert plain_rows(b'{"a":1}\r\n{"a":2}') == 2          # CRLF, no final newline
    assert plain_rows(b'{"a":1}\n\n{"a":2}\n') is None      # a blank line
    assert plain_rows(b' {"a":1}\n') is None                # leading space
    assert plain_rows(b'[{"a":1}]') is None                 # a JSON array
    assert plain_rows(b'{"a":1}\n{"a":2}\n\n') is None      # a trailing blank line


def test_bodies_validated_together_equal_each_validated_alone(intake: Intake):
    bodies = [
        ndjson([make_record(i) for i in range(0, 7)]),
        ndjson([make_record(i, ttft_ms=None, client_ip=None) for i in range(7, 9)], end=b""),  # nulls, no final newline
        ndjson([make_record(i, is_stream=False, status_code=429) for i in range(9, 30)]),
    ]
    answers = intake.validate_many(bodies)
    assert intake.joined == 1
    assert [a.table.num_rows for a in answers] == [7, 2, 21]  # type: ignore[union-attr]
    for body, answer in zip(bodies, answers, strict=True):
        assert isinstance(answer, ValidBatch)
        assert answer.table.equals(alone(intake, body))
        assert sorted(answer.ids.rows.tolist()) == list(range(answer.table.num_rows))


def test_a_bad_body_is_refused_alone_with_its_own_row_numbers(intake: Intake):
    good1 = ndjson([make_record(i) for i in range(5)])
    bad = ndjson([make_record(10), make_record(11), make_record(12, latency_ms=-5)])
    good2 = ndjson([make_record(i) for i in range(20, 24)])
    answers = intake.validate_many([good1, bad, good2])
    assert intake.joined == 0
    assert isinstance(answers[1], InvalidBatch)
    assert [(e.row, e.field) for e in answers[1].errors] == [(3, "latency_ms")]  # row 3 of its own batch
    assert answers[0].table.equals(alone(intake, good1))  # type: ignore[union-attr]
    assert answers[2].table.equals(alone(intake, good2))  # type: ignore[union-attr]


def test_a_body_the_fast_reader_refuses_is_judged_alone(intake: Intake):
    unknown = ndjson([make_record(1, colour="red")])
    two_on_a_line = json.dumps(make_record(2)).encode() + b" " + json.dumps(make_record(3)).encode() + b"\n"
    good = ndjson([make_record(4)])
    answers = intake.validate_many([unknown, two_on_a_line, good])
    assert isinstance(answers[0], InvalidBatch) and answers[0].errors[0].field == "colour"
    second = answers[1]
    assert isinstance(second, ValidBatch)
    assert second.table.equals(alone(intake, two_on_a_line))
    assert second.table.column("request_id").to_pylist() == ["req-2", "req-3"]
    assert answers[2].table.column("request_id").to_pylist() == ["req-4"]  # type: ignore[union-attr]


def test_request_ids_repeated_across_bodies_are_not_an_error_but_within_one_they_are(intake: Intake):
    first = ndjson([make_record(1), make_record(2)])
    again = ndjson([make_record(2), make_record(3)])           # req-2 again, in another batch: allowed
    twice = ndjson([make_record(7), make_record(7)])           # req-7 twice in one batch: refused
    answers = intake.validate_many([first, again, twice])
    assert intake.joined == 1
    assert len(answers[0].ids) == 2 and len(answers[1].ids) == 2  # type: ignore[union-attr]
    with pytest.raises(InvalidBatch) as refused:
        answers[2].ids  # type: ignore[union-attr] # noqa: B018 - reading them is the check
    assert [(e.row, e.field) for e in refused.value.errors] == [(2, "request_id")]


def test_cut_error_messages_are_counted_per_batch(intake: Intake):
    long = ndjson([make_record(1, status_code=500, error_message="x" * 2500), make_record(2)])
    short = ndjson([make_record(3)])
    answers = intake.validate_many([short, long])
    assert [a.truncated for a in answers] == [0, 1]  # type: ignore[union-attr]
    assert answers[1].table.column("error_message")[0].as_py() == "x" * 2000  # type: ignore[union-attr]


def test_concurrent_posts_are_grouped_and_every_record_is_stored_once(client: TestClient, engine: Engine):
    """16 clients posting small NDJSON batches at once over HTTP: every batch acknowledged with its own receipt,
    the stored records equal what was sent (recounted in Python), and /metrics shows groups of several batches."""
    sent: list[dict[str, Any]] = []
    bodies: list[bytes] = []
    for b in range(16 * 12):
        batch = [make_record(b * 10 + i, key_id=10 + (b * 10 + i) % 7) for i in range(10)]
        sent.extend(batch)
        bodies.append(ndjson(batch))
    receipts: list[dict[str, Any]] = []
    failures: list[int] = []
    lock = threading.Lock()

    def post(worker: int) -> None:
        for body in bodies[worker::16]:
            r = client.post("/v1/logs", content=body, headers={"content-type": "application/x-ndjson"})
            with lock:
                (receipts.append(r.json()) if r.status_code == 201 else failures.append(r.status_code))

    threads = [threading.Thread(target=post, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert len(receipts) == len(bodies) and all(r["records"] == 10 and r["duplicates"] == 0 for r in receipts)
    stored = engine.sql("SELECT key_id, count(*) AS n FROM log_records GROUP BY key_id").to_pylist()
    assert {row["key_id"]: row["n"] for row in stored} == Counter(r["key_id"] for r in sent)
    metrics = client.get("/metrics").text
    figures = {(m[0], m[1]): float(m[2]) for m in re.findall(
        r'ezstats_ingest_(groups|grouped_batches)_total\{stage="(\w+)"\} ([0-9.e+]+)', metrics)}
    assert figures[("grouped_batches", "validate")] == len(bodies)
    assert figures[("grouped_batches", "commit")] == len(bodies)
    assert figures[("groups", "commit")] < len(bodies)  # some batches shared a commit


def test_a_record_longer_than_the_readers_block_is_read_all_the_same(intake: Intake):
    """The JSON reader cuts a body into blocks (a few hundred KB) to parse them on both cores; a record longer than
    a block is still read, and cut to the error_message limit like any other."""
    records = [make_record(1), make_record(2, status_code=500, error_message="e" * 400_000), make_record(3)]
    body = ndjson(records)
    assert len(body) > 300_000
    (answer,) = intake.validate_many([body])
    assert isinstance(answer, ValidBatch)
    assert answer.table.column("request_id").to_pylist() == ["req-1", "req-2", "req-3"]
    assert answer.table.column("error_message")[1].as_py() == "e" * 2000 and answer.truncated == 1
