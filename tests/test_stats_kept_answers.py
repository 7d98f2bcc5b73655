"""Whole answers of `Stats.read` kept between requests (engine/stats/reader.py, `Reader._answer_key`): served
again only while nothing they were computed from changed, and every change is in the next answer."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from engine.stats import reader as reader_module
from tests import stats_oracle
from tests.factories import make_engine
from tests.stats_records import records

NOW = dt.datetime(2026, 3, 4, 15, 40, tzinfo=dt.UTC)
OPEN = dt.datetime(2026, 3, 4, 15, tzinfo=dt.UTC)
FIRST = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TODAY = dt.datetime(2026, 3, 4, tzinfo=dt.UTC)


@pytest.fixture
def lake(tmp_path):
    """An engine with three closed days (daily tier) and today's closed hours (hourly tier) rolled up."""
    engine = make_engine(tmp_path, NOW, compaction_target_rows=10_000)
    tables = [records(3000, 1, FIRST, OPEN, prefix="closed")]
    engine.ingest_table(tables[0])
    engine.stats.run_daily(NOW)
    return engine, tables


def _read(engine, group_by="key", **kw):
    return engine.stats.read("last7d", group_by=group_by, **kw)


def _kept(engine):
    return len(engine.stats.reader._answers)


def _assert_matches(answer, tables, end=NOW, group_by="key"):
    """The answer's totals and groups equal a Polars recomputation from every record ingested."""
    body = answer.model_dump()
    df = stats_oracle.frame(*tables)
    start = body["start"]
    stats_oracle.check(body["totals"], stats_oracle.expected(df, start, end)[None], exact=False)
    want = stats_oracle.expected(df, start, end, group_by)
    assert {g["group"] for g in body["groups"]} == set(want)
    for g in body["groups"]:
        stats_oracle.check(g, want[g["group"]], exact=False)
    return body


def _land(engine, tables, rows, seed, start, end, prefix):
    batch = records(rows, seed, start, end, prefix=prefix)
    engine.ingest_table(batch)
    tables.append(batch)


def test_an_unchanged_lake_is_answered_from_the_kept_answer(lake):
    engine, tables = lake
    first = _read(engine)
    assert first.sources.daily_days == 3 and first.percentiles == "approx" and _kept(engine) == 1
    again = _read(engine)
    assert again is first  # served as kept: nothing changed, not even the end
    _assert_matches(again, tables)
    model = _read(engine, group_by="model")
    assert model is not first and _read(engine, group_by="model") is model  # another question, its own answer
    assert _kept(engine) == 2


def test_answers_that_change_every_request_are_kept_when_seen_twice(lake):
    engine, tables = lake
    first = _read(engine)
    for i in range(3):
        _land(engine, tables, 50, 60 + i, OPEN, NOW, f"live{i}")
        _assert_matches(_read(engine), tables)
        assert engine.stats.reader._answers[_question(engine)].answer is first  # each new answer: not kept
    second = _read(engine)  # the lake stopped changing: the same inputs a second time, kept
    assert engine.stats.reader._answers[_question(engine)].answer is second and _read(engine) is second
    _assert_matches(second, tables)


def _question(engine):
    return next(iter(engine.stats.reader._answers))


def test_a_batch_landing_in_the_open_hour_is_in_the_next_answer(lake):
    engine, tables = lake
    before = _read(engine)
    for i in range(3):
        _land(engine, tables, 150, 10 + i, OPEN, NOW, f"open{i}")
        after = _assert_matches(_read(engine), tables)
        assert after["totals"]["requests"] == before.totals.requests + 150 * (i + 1)


@pytest.mark.parametrize("when", [TODAY + dt.timedelta(hours=3), FIRST + dt.timedelta(days=1, hours=7)],
                         ids=["closed-hour-today", "closed-day"])
def test_a_late_record_then_its_rollup_rebuilt_are_in_the_next_answers(lake, when):
    engine, tables = lake
    first = _read(engine)
    _land(engine, tables, 7, 20, when, when + dt.timedelta(minutes=30), "late")
    dirty = _assert_matches(_read(engine), tables)  # the hour is dirty in the ledger: read raw
    assert dirty["totals"]["requests"] == first.totals.requests + 7
    assert dirty["sources"]["raw_hours"] > first.sources.raw_hours
    engine.stats.refresh_rollups(NOW)  # the hour's rollups are rebuilt (a new version)
    fresh = _assert_matches(_read(engine), tables)
    assert fresh["totals"]["requests"] == first.totals.requests + 7
    assert fresh["sources"]["raw_hours"] == first.sources.raw_hours


def test_a_backfilled_day_is_in_the_next_answer(lake):
    engine, tables = lake
    day = (FIRST + dt.timedelta(days=1)).date()
    _read(engine)
    late = FIRST + dt.timedelta(days=1, hours=2)
    _land(engine, tables, 11, 30, late, late + dt.timedelta(hours=1), "late")
    engine.stats.backfill(day, day, force=True, now=NOW)  # rollups and daily tier of the day rewritten
    engine.stats.refresh_rollups(NOW)
    body = _assert_matches(_read(engine), tables)
    assert body["sources"]["daily_days"] == 3


def test_a_renamed_key_is_in_the_next_answer(lake):
    engine, _ = lake
    engine.registry.sync({"masters": [{"master_id": 1, "name": "Acme"}],
                          "keys": [{"key_id": 4, "master_id": 1, "name": "before"}]})
    assert {g.name for g in _read(engine).groups if g.group == 4} == {"before"}
    engine.registry.sync({"masters": [{"master_id": 1, "name": "Acme"}],
                          "keys": [{"key_id": 4, "master_id": 1, "name": "after"}]})
    assert {g.name for g in _read(engine).groups if g.group == 4} == {"after"}


def test_a_later_end_reuses_the_figures_a_file_reaching_past_it_is_not_kept(lake):
    engine, tables = lake
    _land(engine, tables, 100, 40, OPEN, NOW, "open")
    first = _read(engine)
    later = NOW + dt.timedelta(minutes=5)
    engine.clock = lambda: later
    moved = _read(engine)  # the kept figures with the new end: every file read ends before either end
    assert moved.end == later and moved.totals == first.totals and moved.groups is first.groups
    _land(engine, tables, 100, 41, OPEN, later + dt.timedelta(minutes=20), "ahead")  # a clock running ahead
    _assert_matches(_read(engine), tables, end=later)
    assert engine.stats.reader._answers[_question(engine)].answer is first  # bounded by the end, so not kept
    even_later = later + dt.timedelta(minutes=10)
    engine.clock = lambda: even_later
    _assert_matches(_read(engine), tables, end=even_later)


def test_a_compacted_open_hour_changes_no_figure(lake):
    engine, tables = lake
    for i in range(5):
        _land(engine, tables, 100, 50 + i, OPEN, NOW, f"c{i}")
    before = _read(engine)
    assert engine.compactor.run(NOW).rows > 0  # new files, new identities: a new key
    after = _read(engine)
    assert after is not before and after == before
    _assert_matches(after, tables)


def test_other_and_limit_answers_are_kept_apart(lake):
    engine, tables = lake
    top = _read(engine, top=reader_module.TopN(limit=3, sort="-errors", other=True))
    every = _read(engine)
    _assert_matches(every, tables)
    assert top.other is not None and top.other.groups == every.groups_total - 3
    assert [g.group for g in top.groups] == [g.group for g in sorted(every.groups, key=lambda g: (-g.errors, g.group))][:3]
    assert top.other.requests == every.totals.requests - sum(g.requests for g in top.groups)


def test_group_metrics_equal_metrics_row_by_row():
    rng = random.Random(3)
    rows = []
    for i in range(300):
        n = rng.choice([0, 1, 5, 1000])
        rows.append({"kind": "group", "g1": None if i == 0 else str(i), "g2": None, "model": None,
                     "requests": n, "successes": rng.choice([None, n]), "errors": rng.randrange(n + 1),
                     "rate_limited": 0, "provider_failures": 1, "prompt_tokens": 2**40, "completion_tokens": None,
                     "total_tokens": 3, "quota_cost": 4, "masters": 1, "keys": 2, "streams": None,
                     "latency_sum": rng.randrange(10**9), "latency_max": rng.choice([None, 7]),
                     "ttft_n": rng.choice([None, 0, 3]), "ttft_sum": 10, "ttft_max": 2})
    pcts = {r["g1"]: {"kind": "group", "g1": r["g1"], "g2": None, "p50": 1, "p95": 2.5, "p99": None}
            for r in rows if rng.random() < 0.7}
    for group_by in ("key", "model"):
        got = reader_module._group_metrics(group_by, rows, pcts)
        want = [{"group": reader_module._group_value(group_by, r["g1"]), "g1": r["g1"],
                 **reader_module._metrics(r, pcts.get(r["g1"]))} for r in rows]
        assert got == want
        assert [list(g) for g in got] == [list(w) for w in want]
