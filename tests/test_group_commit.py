"""Group commit: batches written at the same time share one staging folder, file per day and ledger transaction,
while each keeps its own idempotency, duplicates, refusal and receipt."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pyarrow as pa
import pytest

from engine import Engine
from engine.errors import IdempotencyKeyReused, InvalidBatch
from engine.group_commit import GroupCommitter
from engine.lake import BatchReceipt
from tests.conftest import make_record


def table(*records: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist(list(records))


def records(first: int, n: int, **overrides: Any) -> list[dict[str, Any]]:
    return [make_record(i, **overrides) for i in range(first, first + n)]


def _wait(condition: Any) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def write_as_one_group(engine: Engine, batches: list[tuple[pa.Table, str]]) -> list[BatchReceipt | BaseException]:
    """Write `batches` from one thread each so that they form one group: a first write holds the committer
    (blocked on the publish lock the test holds) while the others queue up, in order, behind it."""
    results: list[BatchReceipt | BaseException | None] = [None] * (len(batches) + 1)
    committer = engine.lake.committer

    def write(k: int, data: pa.Table, batch_id: str) -> None:
        try:
            results[k] = engine.ingest_table(data, batch_id)
        except BaseException as exc:
            results[k] = exc

    threads = []
    with engine.lake.publish_lock():
        lead = threading.Thread(target=write, args=(0, table(make_record(900_000)), "leader"))
        lead.start()
        threads.append(lead)
        _wait(lambda: engine.lake.committer.items >= 1 and committer.waiting() == 0)
        for k, (data, batch_id) in enumerate(batches, start=1):
            t = threading.Thread(target=write, args=(k, data, batch_id))
            t.start()
            threads.append(t)
            _wait(lambda k=k: committer.waiting() == k)
        groups = committer.groups
    for t in threads:
        t.join(60)
    assert committer.groups == groups + 1  # the queued batches went as one group
    assert all(r is not None for r in results)
    return results[1:]  # type: ignore[return-value]


def test_a_group_shares_one_file_per_day_and_one_ledger_transaction_with_per_batch_answers(engine: Engine):
    day2 = "2026-01-02T08:00:00Z"
    batches = [
        (table(*records(0, 100)), "a"),
        (table(*records(100, 50), make_record(7_000)), "b"),         # req-7000 first here...
        (table(*records(200, 30), make_record(7_000)), "c"),         # ...so it is a duplicate here, counted once
        (table(*records(300, 20), make_record(7_000, created_at=day2)), "d"),  # the same id on another day: stored
        (table(*records(0, 100)), "a"),                              # "a" again at once: the same receipt
        (table(*records(400, 5)), "a"),                              # "a" with another body: refused alone
        (table(make_record(500), make_record(500)), "e"),            # an id twice in one batch: refused alone
        (table(*records(600, 10, created_at=day2)), "f"),
    ]
    results = write_as_one_group(engine, batches)
    a, b, c, d, a_again, a_other, e, f = results
    assert isinstance(a, BatchReceipt) and (a.records, a.duplicates) == (100, 0)
    assert isinstance(b, BatchReceipt) and (b.records, b.duplicates) == (51, 0)
    assert isinstance(c, BatchReceipt) and (c.records, c.duplicates) == (30, 1)
    assert isinstance(d, BatchReceipt) and (d.records, d.duplicates) == (21, 0)
    assert isinstance(a_again, BatchReceipt) and a_again.replayed and a_again.records == 100
    # ingest_table binds no fingerprint, so "a" with another body answers a's receipt (HTTP refuses it: see below)
    assert isinstance(a_other, BatchReceipt) and a_other.records == 100
    assert isinstance(e, InvalidBatch)
    assert isinstance(f, BatchReceipt) and f.records == 10
    # One file per UTC day for the whole group, named by every batch that has records in it.
    assert set(a.files) | set(b.files) | set(c.files) | set(d.files) | set(f.files) == set(d.files)
    assert len(d.files) == 2 and a.files == b.files == c.files
    got = engine.sql("SELECT count(*) n, count(DISTINCT (request_id, date)) d FROM log_records").to_pylist()
    assert got == [{"n": 1 + 100 + 51 + 30 + 21 + 10, "d": 1 + 100 + 51 + 30 + 21 + 10}]
    with engine.infra.store.connect(write=False) as con:
        rows = con.execute("SELECT batch_id, staging, state, records, files FROM ingest_batches"
                           " WHERE batch_id <> 'leader'").fetchall()
    assert {r["batch_id"]: r["records"] for r in rows} == {"a": 100, "b": 51, "c": 30, "d": 21, "f": 10}
    assert len({r["staging"] for r in rows}) == 1 and {r["state"] for r in rows} == {"committed"}
    # Each ledger row counts its own rows of the shared files: lake check adds them up to the files' rows.
    report = engine.check_lake()
    assert report.ok and not report.mismatches and not report.unchecked_days, report
    per_file: dict[str, int] = {}
    for r in rows:
        for _, final, n in json.loads(r["files"]):
            per_file[final] = per_file.get(final, 0) + n
    assert sum(n for name, n in per_file.items() if name.startswith("log_records/")) == 212


def test_a_group_finds_its_ledger_rows_by_index_however_long_the_ledger(engine: Engine, monkeypatch: Any):
    """The ledger keeps every batch for ever: a group's lookups of its own rows must not read all of it (without
    the partial index on `staging`, a group of 16 small batches took 312 ms at 1M ledger rows, 11 ms when empty).
    Every statement a group commit runs on ingest_batches is planned by SQLite itself: none scans the table."""
    statements: list[str] = []
    borrow = engine.infra.store._borrow

    def traced() -> Any:
        con = borrow()
        con.set_trace_callback(statements.append)  # the SQL as run, bound values in place
        return con

    monkeypatch.setattr(engine.infra.store, "_borrow", traced)
    results = write_as_one_group(engine, [(table(*records(0, 10)), "a"), (table(*records(10, 10)), "b")])
    assert all(isinstance(r, BatchReceipt) and r.records == 10 for r in results)
    monkeypatch.undo()
    looked = [s for s in statements if "ingest_batches" in s and s.lstrip().upper().startswith(("SELECT", "UPDATE",
                                                                                                 "DELETE"))]
    assert any("staging" in s for s in looked) and any("UPDATE" in s for s in looked)  # the commit's own lookups
    with engine.infra.store.connect(write=False) as con:
        for sql in looked:
            plan = " ".join(str(row[3]) for row in con.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN ingest_batches" not in plan, (sql, plan)


def test_a_reused_key_with_another_body_is_refused_alone_inside_a_group(engine: Engine):
    first, other = table(*records(0, 10)), table(*records(50, 10))
    results: dict[str, Any] = {}
    committer = engine.lake.committer

    def write(name: str, data: pa.Table, fingerprint: str) -> None:
        from engine.validation import validate_batch
        try:
            results[name] = engine.lake.write(validate_batch(data), "key:k", fingerprint)
        except BaseException as exc:
            results[name] = exc

    with engine.lake.publish_lock():
        lead = threading.Thread(target=write, args=("lead", table(make_record(999)), "f0"))
        lead.start()
        _wait(lambda: committer.items >= 1 and committer.waiting() == 0)
        one = threading.Thread(target=write, args=("one", first, "f1"))
        one.start()
        _wait(lambda: committer.waiting() == 1)
        two = threading.Thread(target=write, args=("two", other, "f2"))
        two.start()
        _wait(lambda: committer.waiting() == 2)
    for t in (lead, one, two):
        t.join(60)
    # The leader stored key k with f0; both queued writers bring other bodies under the same key.
    assert isinstance(results["lead"], BatchReceipt)
    assert isinstance(results["one"], IdempotencyKeyReused) and isinstance(results["two"], IdempotencyKeyReused)
    assert engine.sql("SELECT count(*) n FROM log_records").to_pylist() == [{"n": 1}]


def test_the_committer_groups_what_queues_while_a_commit_runs():
    gate = threading.Event()
    groups: list[list[int]] = []

    def commit(items: Any) -> list[int | BaseException]:
        groups.append(list(items))
        gate.wait(10)
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(commit, lambda i: 1, max_size=3)
    answers: dict[int, Any] = {}

    def submit(i: int) -> None:
        try:
            answers[i] = committer.submit(i)
        except ValueError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    _wait(lambda: groups == [[0]])
    for i in range(1, 6):
        threads.append(threading.Thread(target=submit, args=(i,)))
        threads[-1].start()
        _wait(lambda i=i: committer.waiting() == i)
    gate.set()
    for t in threads:
        t.join(10)
    assert groups == [[0], [1, 2, 3], [4, 5]]  # at most max_size per group, in arrival order
    assert {i: a for i, a in answers.items() if not isinstance(a, BaseException)} == {0: 0, 2: 20, 4: 40}
    assert all(isinstance(answers[i], ValueError) for i in (1, 3, 5))


def test_concurrent_http_batches_are_all_stored_once(client: Any, engine: Engine):
    """Many clients at once through the real app: every batch acknowledged is stored exactly once, and fewer
    ledger transactions (groups) than batches ran."""
    bodies = ["\n".join(json.dumps(make_record(k * 1000 + i)) for i in range(20)) for k in range(40)]
    answers: list[Any] = [None] * len(bodies)

    def send(k: int) -> None:
        answers[k] = client.post("/v1/logs", content=bodies[k], headers={"Content-Type": "application/x-ndjson"})

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [201] * len(bodies)
    assert engine.sql("SELECT count(DISTINCT request_id) d, count(*) n FROM log_records").to_pylist() == [
        {"d": 800, "n": 800}]
    assert engine.lake.committer.items == len(bodies)
    assert engine.check_lake().ok


def test_submit_later_answers_callbacks_in_the_groups_of_waiting_callers():
    """Calls that do not wait (an event loop's) join the same groups as waiting callers; their results and errors
    reach their callbacks once their group committed, a broken callback leaves the others answered, and a group
    of them is led by the committer's own thread, not by a caller that already has its answer."""
    gate = threading.Event()
    groups: list[list[int]] = []
    leaders: list[str] = []

    def commit(items: Any) -> list[int | BaseException]:
        groups.append(list(items))
        leaders.append(threading.current_thread().name)
        gate.wait(10)
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(commit, lambda i: 1, max_size=3)
    answers: dict[int, Any] = {}
    answered = threading.Event()

    def later(i: int) -> None:
        def notify(result: Any) -> None:
            if i == 4:
                raise RuntimeError("a broken callback")
            answers[i] = result
            if {1, 2, 5} <= answers.keys():  # every working callback ran (groups commit one after the other)
                answered.set()
        committer.submit_later(i, notify)

    def wait_for(i: int) -> None:
        answers[i] = committer.submit(i)

    first = threading.Thread(target=wait_for, args=(0,))
    first.start()
    _wait(lambda: groups == [[0]])
    later(1)
    later(2)
    third = threading.Thread(target=lambda: answers.__setitem__(3, _caught(committer.submit, 3)))
    third.start()
    _wait(lambda: committer.waiting() == 3)
    later(4)
    later(5)
    _wait(lambda: committer.waiting() == 5)
    gate.set()
    first.join(10)
    third.join(10)
    assert answered.wait(10)
    assert groups == [[0], [1, 2, 3], [4, 5]]
    assert answers[0] == 0 and answers[2] == 20
    assert all(isinstance(answers[i], ValueError) for i in (1, 3, 5))  # errors reach callbacks as values
    assert 4 not in answers
    assert leaders[0] == first.name and all(name.startswith("ezstats-group") for name in leaders[1:])
    _wait(lambda: committer.waiting() == 0)
    later(6)  # an idle committer starts a commit for a lone later call at once
    _wait(lambda: 6 in answers)
    assert answers[6] == 60 and groups[-1] == [6]


def _caught(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as exc:
        return exc


def test_bodies_handed_over_without_waiting_are_decoded_and_stored_as_one_group(engine: Engine):
    """`ingest_body_later`: small NDJSON bodies join the lake's next group undecoded; the group decodes them at
    once, a bad body is refused alone with its own row numbers, a replay answers its receipt, and other bodies
    (a JSON array) are stored on an engine thread. Stored records are recounted from what was sent."""
    def body(first: int, n: int, **overrides: Any) -> bytes:
        return "\n".join(json.dumps(make_record(i, **overrides)) for i in range(first, first + n)).encode()

    bad = b"\n".join([json.dumps(make_record(900)).encode(), json.dumps(make_record(901, latency_ms=-1)).encode()])
    sent = {"a": body(0, 30), "b": body(100, 5), "bad": bad, "c": body(200, 12), "a-again": body(0, 30)}
    keys = {"a": "k-a", "b": "k-b", "bad": "k-bad", "c": "k-c", "a-again": "k-a"}
    outcomes: dict[str, Any] = {}
    lock = threading.Lock()

    def done_for(name: str) -> Any:
        def done(outcome: Any) -> None:
            with lock:
                outcomes[name] = outcome
        return done

    committer, joined = engine.lake.committer, engine.intake.joined
    with engine.lake.publish_lock():
        engine.ingest_body_later(body(500, 1), "application/x-ndjson", done_for("lead"), "k-lead")
        _wait(lambda: committer.items >= 1 and committer.waiting() == 0)  # the lead's group waits for the lock
        groups = committer.groups
        for name in ("a", "b", "bad", "c"):
            engine.ingest_body_later(sent[name], "application/x-ndjson", done_for(name), keys[name])
        assert committer.waiting() == 4
    _wait(lambda: len(outcomes) == 5)
    assert committer.groups == groups + 1 and engine.intake.joined == joined  # one group; the bad body split it
    assert isinstance(outcomes["bad"], InvalidBatch)
    assert [(e.row, e.field) for e in outcomes["bad"].errors] == [(2, "latency_ms")]
    assert {n: outcomes[n].records for n in ("a", "b", "c")} == {"a": 30, "b": 5, "c": 12}
    assert len({outcomes[n].files for n in ("a", "b", "c")}) == 1  # one file for the group's one day

    engine.ingest_body_later(sent["a-again"], "application/x-ndjson", done_for("a-again"), "k-a")
    engine.ingest_body_later(json.dumps([make_record(300), make_record(301)]).encode(), "application/json",
                             done_for("json"))
    engine.ingest_body_later(b"not json", "text/csv", done_for("csv"))
    _wait(lambda: len(outcomes) == 8)
    assert outcomes["a-again"].replayed and outcomes["a-again"].records == 30
    assert outcomes["json"].records == 2
    assert type(outcomes["csv"]).__name__ == "UnsupportedFormat"
    expected = sorted({json.loads(line)["request_id"] for n in ("a", "b", "c") for line in sent[n].splitlines()}
                      | {"req-500", "req-300", "req-301"})
    got = engine.sql("SELECT request_id FROM log_records ORDER BY request_id").column("request_id").to_pylist()
    assert got == expected
    assert engine.check_lake().ok


@pytest.mark.parametrize("wait", [0.0, 5.0])
def test_a_commit_waits_for_the_callers_of_the_previous_round_only_with_wait(wait: float):
    """With `wait`, the group after a commit waits for as many callers as were in flight at its end (its group and
    those queued), not longer than half that commit's time: one caller arriving late joins its group instead of
    paying a commit of its own. Without it, groups never wait."""
    gate = threading.Event()
    groups: list[list[int]] = []

    def commit(items: Any) -> list[int]:
        groups.append(list(items))
        if len(groups) == 1:
            gate.wait(10)
            time.sleep(1.0)  # the first commit takes at least 1 s: a wait of up to 0.5 s may follow it
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(commit, lambda i: 1, max_size=100, wait=wait)
    threads = [threading.Thread(target=committer.submit, args=(0,))]
    threads[0].start()
    _wait(lambda: groups == [[0]])
    for i in (1, 2, 3):  # queued behind the first commit: 4 in flight at its end
        threads.append(threading.Thread(target=committer.submit, args=(i,)))
        threads[-1].start()
        _wait(lambda i=i: committer.waiting() == i)
    gate.set()
    threads[0].join(10)  # the first commit ended
    if not wait:
        _wait(lambda: len(groups) == 2)  # the next group started at once
    threads.append(threading.Thread(target=committer.submit, args=(4,)))  # the first group's caller, back
    threads[-1].start()
    for t in threads:
        t.join(10)
    if wait:
        assert groups == [[0], [1, 2, 3, 4]]
    else:
        assert groups[:2] == [[0], [1, 2, 3]] and groups[2:] == [[4]]
    # Nobody else comes: a wait ends after at most half the previous commit's time, and everything is answered.
    lone = threading.Thread(target=committer.submit, args=(5,))
    lone.start()
    lone.join(10)
    assert not lone.is_alive() and groups[-1] == [5]
