"""The rollup refresh folds only newly published files into the hours it knows, and stays exact.

Real lake, real DuckDB, real SQLite. After each step the day's hourly rollups and histograms are checked
against a plain-Python computation over the same records (tests/test_stats_retained.py's oracle), and at
the end against a from-scratch recompute of the whole day: after new files, a compaction swap, late
records into closed hours, and a day dropped by retention.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine import Engine
from engine.stats.rollups import Rollups
from engine.tables import LOG_RECORDS
from engine.times import midnight
from tests.factories import make_engine
from tests.stats_records import records
from tests.test_stats_retained import (
    DAY1,
    DAY2,
    HOUR,
    NOW,
    assert_holds,
    histograms,
    rollups,
)

H = [midnight(DAY1) + i * HOUR for i in range(24)]


class Folds:
    """What each refresh of the day did: files read as new, hours folded or recomputed (a spy, not a stand-in)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rollups_: Rollups) -> None:
        self.calls: list[dict[str, Any]] = []
        real = rollups_._fold

        def spy(day: dt.date, listed: frozenset[str], new: list[str], tracked: list[dt.datetime],
                full: list[dt.datetime], threads: int) -> dict[str, int]:
            self.calls.append({"day": day, "new": list(new), "tracked": list(tracked), "full": list(full)})
            return real(day, listed, new, tracked, full, threads)

        monkeypatch.setattr(rollups_, "_fold", spy)

    def last(self) -> dict[str, Any]:
        return self.calls[-1]


def _files(engine: Engine, day: dt.date = DAY1) -> set[str]:
    return {p.name for p in LOG_RECORDS.partition_dir(engine.settings.data_dir, day).glob("*.parquet")}


def _span(n: int, seed: int, first: int, last: int, prefix: str = "r") -> pa.Table:
    """n records of day 1 in hours [first, last]."""
    return records(n, seed, H[first], H[last] + HOUR, f"{prefix}{seed}")


def _ingest(engine: Engine, table: pa.Table) -> set[str]:
    """Ingest a table; returns the raw files it added to day 1."""
    before = _files(engine)
    engine.ingest_table(table)
    return _files(engine) - before


def _same_as_from_scratch(engine: Engine, *tables: pa.Table) -> None:
    """A recompute of the whole day from raw records gives the very rows the folds left."""
    folded, folded_hist = rollups(engine), histograms(engine)
    with engine.stats.rollups.lock():
        engine.stats.rollups.recompute(DAY1)
    assert rollups(engine) == folded
    assert histograms(engine) == folded_hist
    assert_holds(engine, *tables)


def test_new_files_are_folded_into_the_hours_already_rolled_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    engine = make_engine(tmp_path, NOW)
    folds = Folds(monkeypatch, engine.stats.rollups)
    t1 = _span(300, 1, 3, 5)
    engine.ingest_table(t1)
    engine.stats.refresh_rollups(NOW)
    assert folds.last()["new"] == [] and folds.last()["full"] == H[3:6]  # nothing known yet: every file read
    assert_holds(engine, t1)

    t2 = _span(200, 2, 4, 6)
    added = _ingest(engine, t2)
    engine.stats.refresh_rollups(NOW)
    # Only the new file is read, folded into hours 4 and 5; hour 6 is new, so read from every file.
    assert folds.last() == {"day": DAY1, "new": sorted(added), "tracked": H[3:6], "full": [H[6]]}
    assert_holds(engine, t1, t2)

    t3, t4 = _span(50, 3, 3, 3), _span(70, 4, 5, 6)
    added = _ingest(engine, t3) | _ingest(engine, t4)
    engine.stats.refresh_rollups(NOW)
    assert folds.last() == {"day": DAY1, "new": sorted(added), "tracked": H[3:7], "full": []}
    assert_holds(engine, t1, t2, t3, t4)

    calls = len(folds.calls)
    engine.stats.refresh_rollups(NOW)  # nothing new: nothing read, nothing written
    assert len(folds.calls) == calls
    _same_as_from_scratch(engine, t1, t2, t3, t4)


def test_a_compaction_swap_ends_the_folding_until_the_hours_are_read_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW)
    folds = Folds(monkeypatch, engine.stats.rollups)
    tables = [_span(100, seed, 2, 4) for seed in range(10, 14)]
    for table in tables:
        engine.ingest_table(table)
    engine.stats.refresh_rollups(NOW)
    late = _span(60, 20, 3, 4)
    engine.ingest_table(late)  # published, not yet folded, when compaction merges it with the folded files
    outcome = engine.compactor.run(NOW)
    assert outcome.details["partitions"][0]["files_in"] == 5 and len(_files(engine)) == 1
    engine.stats.refresh_rollups(NOW)
    # The folded files are gone: the dirty hours are read whole, the merged file's records counted once.
    assert folds.last()["new"] == [] and folds.last()["full"] == H[3:5]
    assert_holds(engine, *tables, late)

    more = _span(40, 21, 2, 4)
    added = _ingest(engine, more)
    engine.stats.refresh_rollups(NOW)
    # Hours 3-4 are known again (from the merged file); hour 2 was last written before the swap.
    assert folds.last() == {"day": DAY1, "new": sorted(added), "tracked": H[3:5], "full": [H[2]]}
    assert_holds(engine, *tables, late, more)
    _same_as_from_scratch(engine, *tables, late, more)


def test_late_records_into_closed_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW)
    folds = Folds(monkeypatch, engine.stats.rollups)
    t1 = _span(300, 30, 0, 20)
    engine.ingest_table(t1)
    engine.stats.refresh_rollups(NOW)  # day 1 is closed at NOW: its daily tier is built too
    daily = engine.sql(f"SELECT sum(requests) AS n FROM rollups_daily WHERE date = DATE '{DAY1}'").to_pylist()
    assert daily == [{"n": 300}]

    late = _span(5, 31, 7, 7)
    added = _ingest(engine, late)
    older = _span(3, 32, 22, 23)  # hours nothing was rolled up for yet
    added |= _ingest(engine, older)
    engine.stats.refresh_rollups(NOW)
    assert folds.last()["new"] == sorted(added) and folds.last()["full"] == H[22:24]
    assert_holds(engine, t1, late, older)
    daily = engine.sql(f"SELECT sum(requests) AS n FROM rollups_daily WHERE date = DATE '{DAY1}'").to_pylist()
    assert daily == [{"n": 308}]  # the daily tier follows the folded hours

    # Another process (no memory of the folds) takes over: it reads the dirty hours whole, still exact.
    engine.ingest_table(late2 := _span(4, 33, 7, 8))
    Rollups(engine.infra, engine.stats.drops).refresh(NOW)
    assert_holds(engine, t1, late, older, late2)
    # ... and this process's memory no longer matches the hours that one rewrote: read whole again.
    engine.ingest_table(late3 := _span(2, 34, 7, 7))
    engine.stats.refresh_rollups(NOW)
    assert folds.last()["full"] == [H[7]]
    assert_holds(engine, t1, late, older, late2, late3)
    _same_as_from_scratch(engine, t1, late, older, late2, late3)


def test_a_day_dropped_by_retention_takes_the_base_and_late_records(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW, log_retention_days=2)
    folds = Folds(monkeypatch, engine.stats.rollups)
    day1 = records(600, 1, midnight(DAY1), midnight(DAY2))
    engine.ingest_table(day1)
    engine.ingest_table(records(400, 2, midnight(DAY2), midnight(DAY2) + 24 * HOUR))
    engine.stats.refresh_rollups(NOW)
    extra = _span(30, 40, 3, 4)
    engine.ingest_table(extra)
    assert engine.stats.run_daily(NOW) == 2
    assert folds.last()["day"] == DAY1 and folds.last()["full"] == []  # folded, before the drop
    outcome = engine.cleaner.run(NOW)
    assert [d["day"] for d in outcome.details["days"] if d["action"] == "drop"] == [DAY1.isoformat()]

    late = _span(40, 41, 3, 4, "late")
    engine.ingest_table(late)
    calls = len(folds.calls)
    engine.stats.refresh_rollups(NOW)
    assert len(folds.calls) == calls  # a dropped day: the rows kept at the drop plus the late records
    assert_holds(engine, day1, extra, late)
    late2 = _span(10, 42, 4, 5, "late")
    engine.ingest_table(late2)
    engine.stats.refresh_rollups(NOW)
    assert_holds(engine, day1, extra, late, late2)
    with engine.stats.rollups.lock():
        engine.stats.rollups.recompute(DAY1)  # base + raw since the drop, from scratch: the same
    assert_holds(engine, day1, extra, late, late2)
