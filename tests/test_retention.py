"""The log cleaner: retention by days, then by max records, with its safety rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine
from tests.conftest import ON_BOTH
from tests.factories import day_records, make_engine, mark_summarized

NOW = dt.datetime(2026, 3, 31, 9, 0, tzinfo=dt.UTC)
TODAY = NOW.date()


def _lake(tmp_path: Path, sizes: dict[int, int], summarized: set[int] | None = None, **settings) -> Engine:
    """Days `TODAY - k` with `sizes[k]` records each; summarized: the k's whose daily stats exist."""
    engine = make_engine(tmp_path, NOW, **settings)
    engine.ingest_table(pa.concat_tables(day_records(TODAY - dt.timedelta(days=k), n, seed=k)
                                         for k, n in sizes.items()))
    for k in sizes if summarized is None else summarized:
        mark_summarized(engine, TODAY - dt.timedelta(days=k))
    return engine


def _days_left(engine: Engine) -> dict[dt.date, int]:
    rows = engine.sql("SELECT date, count(*) AS n FROM log_records GROUP BY date").to_pylist()
    return {r["date"]: r["n"] for r in rows}


@ON_BOTH  # also on the PostgreSQL control store
def test_retention_by_days_keeps_the_last_n_days(tmp_path: Path) -> None:
    sizes = {k: 5 + k for k in (0, 1, 29, 30, 31, 45)}
    engine = _lake(tmp_path, sizes, log_retention_days=30)
    outcome = engine.cleaner.run(NOW)
    kept = {TODAY - dt.timedelta(days=k): n for k, n in sizes.items() if k <= 29}
    assert _days_left(engine) == kept
    assert outcome.rows == sizes[30] + sizes[31] + sizes[45]
    dropped = {d["day"] for d in outcome.details["days"] if d["action"] == "drop"}
    assert dropped == {(TODAY - dt.timedelta(days=k)).isoformat() for k in (30, 31, 45)}
    # daily stats are never touched
    assert all((tmp_path / "daily_stats" / f"date={TODAY - dt.timedelta(days=k)}").is_dir() for k in sizes)


def test_a_day_without_daily_stats_is_kept_and_the_record_says_why(tmp_path: Path) -> None:
    engine = _lake(tmp_path, {0: 3, 40: 4, 41: 6}, summarized={0, 41}, log_retention_days=30)
    outcome = engine.jobs.run("log_cleaner")
    assert _days_left(engine) == {TODAY: 3, TODAY - dt.timedelta(days=40): 4}
    assert outcome.rows == 6
    assert f"kept {TODAY - dt.timedelta(days=40)} (daily stats not written yet)" in outcome.message
    blocked = [d for d in outcome.details["days"] if d["action"] == "keep"]
    assert blocked == [{"day": str(TODAY - dt.timedelta(days=40)), "records": 4, "action": "keep",
                        "reason": "daily stats not written yet"}]


def test_max_records_drops_the_oldest_whole_days_but_never_today(tmp_path: Path) -> None:
    sizes = {0: 50, 1: 20, 2: 20, 3: 20, 4: 20}
    engine = _lake(tmp_path, sizes, log_max_records=95)
    engine.cleaner.run(NOW)
    # 130 records: days 4 then 3 go (90 left, <= 95); day 2 stays.
    assert _days_left(engine) == {TODAY - dt.timedelta(days=k): sizes[k] for k in (0, 1, 2)}
    make_engine(tmp_path, NOW, log_max_records=10).cleaner.run(NOW)
    assert _days_left(engine) == {TODAY: 50}  # over the cap, but today is never dropped
    plan = make_engine(tmp_path, NOW, log_max_records=10).cleaner.plan(NOW)
    assert [(d.day, d.action, d.reason) for d in plan.decisions] == [(TODAY, "keep", "today is never dropped")]


def test_max_records_counts_every_day_against_an_independent_total(tmp_path: Path) -> None:
    sizes = {k: 7 * k + 3 for k in range(12)}
    engine = _lake(tmp_path, sizes, summarized=set(range(12)) - {9}, log_max_records=200)
    engine.cleaner.run(NOW)
    # Independent: walk oldest first, skip the unsummarized day, stop once the total fits.
    total, left = sum(sizes.values()), dict(sizes)
    for k in sorted(sizes, reverse=True):
        if total <= 200:
            break
        if k not in (0, 9):
            total -= left.pop(k)
    assert _days_left(engine) == {TODAY - dt.timedelta(days=k): n for k, n in left.items()}
    assert sum(_days_left(engine).values()) == total


def test_dry_run_lists_what_would_go_and_changes_nothing(tmp_path: Path) -> None:
    engine = _lake(tmp_path, {0: 2, 35: 3, 36: 4}, log_retention_days=30)
    before = _days_left(engine)
    dry = engine.jobs.dry_run("log_cleaner")
    assert dry.rows == 7 and dry.details["dry_run"] is True
    assert dry.message.startswith("would drop 2 day(s), 7 records")
    assert _days_left(engine) == before
    assert engine.jobs.runs("log_cleaner") == []  # dry runs are not recorded
    done = engine.cleaner.run(NOW)
    assert done.details["days"] == dry.details["days"]


@ON_BOTH  # also on the PostgreSQL control store
def test_dropped_partitions_leave_the_table_whole_and_are_purged_after_the_grace(tmp_path: Path) -> None:
    engine = _lake(tmp_path, {0: 2, 40: 3}, lake_grace_seconds=600)
    engine.cleaner.run(NOW)
    retired = list((tmp_path / "_retired" / "log_records").iterdir())
    assert len(retired) == 1 and retired[0].name.startswith(f"date={TODAY - dt.timedelta(days=40)}.")
    assert len(list(retired[0].glob("*.parquet"))) == 1  # intact for readers that listed it
    engine.cleaner.run(NOW + dt.timedelta(seconds=599))
    assert retired[0].exists()
    engine.cleaner.run(NOW + dt.timedelta(seconds=600))
    assert not retired[0].exists()


@settings(max_examples=20, deadline=None)
@given(sizes=st.dictionaries(st.integers(0, 12), st.integers(1, 30), min_size=1, max_size=8),
       unsummarized=st.sets(st.integers(0, 12), max_size=4),
       retention=st.integers(1, 14), cap=st.integers(1, 150))
def test_cleaner_invariants(tmp_path_factory: pytest.TempPathFactory, sizes: dict[int, int],
                            unsummarized: set[int], retention: int, cap: int) -> None:
    tmp_path = tmp_path_factory.mktemp("clean")
    engine = _lake(tmp_path, sizes, summarized=set(sizes) - unsummarized,
                   log_retention_days=retention, log_max_records=cap)
    engine.cleaner.run(NOW)
    left = {(TODAY - day).days for day in _days_left(engine)}
    dropped = set(sizes) - left
    assert 0 not in dropped and not dropped & unsummarized  # never today, never unsummarized
    droppable = {k for k in sizes if k != 0 and k not in unsummarized}
    assert {k for k in droppable if k >= retention} <= dropped  # every expired day that may go, went
    by_cap = dropped - {k for k in droppable if k >= retention}
    if by_cap:  # cap drops take the oldest droppable days first and stop once under the cap
        assert all(k in dropped for k in droppable if k > min(by_cap))
        assert sum(sizes[k] for k in left) + sizes[min(by_cap)] > cap
    if sum(sizes[k] for k in left) > cap:
        assert droppable <= dropped  # over the cap only when nothing more may go


def test_a_day_with_late_records_is_kept_until_its_stats_are_rewritten(tmp_path: Path) -> None:
    engine = _lake(tmp_path, {0: 2, 40: 3, 41: 4})
    late = TODAY - dt.timedelta(days=40)
    with engine.store.connect() as con:  # what the stats job records when a batch lands in a summarized day
        con.execute("CREATE TABLE IF NOT EXISTS daily_stats_late (date TEXT PRIMARY KEY, first_seen_at TEXT NOT NULL, "
                    "last_seen_at TEXT NOT NULL, refreshes INTEGER NOT NULL)")
        con.execute("INSERT INTO daily_stats_late VALUES (?, 'x', 'x', 1)", (late.isoformat(),))
    outcome = engine.cleaner.run(NOW)
    assert _days_left(engine) == {TODAY: 2, late: 3}
    assert f"{late} (records arrived after its daily stats)" in outcome.message
