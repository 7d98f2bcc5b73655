"""`Rollups.pending` reads only the ledger past what it read before, and still answers what a fresh read of
the whole ledger past the watermark answers: batches committing, one still publishing holding the watermark
back, a refresh moving the watermark (in this process or another)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from engine import Engine
from engine.stats.rollups import Pending, Rollups
from tests.factories import make_engine, records

NOW = dt.datetime(2026, 3, 5, 12, 30, tzinfo=dt.UTC)


def _fresh(engine: Engine) -> Pending:
    """What a Rollups that has read nothing before answers."""
    return Rollups(engine.infra, engine.stats.drops).pending()


def _ingest(engine: Engine, *hours: int) -> None:
    engine.ingest_table(records([dt.datetime(2026, 3, 5, h, 7, tzinfo=dt.UTC) for h in hours]))


def _publishing(engine: Engine, hour: int) -> None:
    """A ledger row like the one a writer leaves between recording a batch and committing it."""
    stamp = dt.datetime(2026, 3, 5, hour, tzinfo=dt.UTC).isoformat()
    with engine.infra.store.connect() as con:
        con.execute("INSERT INTO ingest_batches (batch_id, state, records, files, staging, hours, created_at)"
                    " VALUES ('slow', 'publishing', 1, '[]', 'staging-slow', ?, ?)",
                    (json.dumps([stamp]), NOW.isoformat()))


def _commit_publishing(engine: Engine) -> None:
    with engine.infra.store.connect() as con:
        con.execute("UPDATE ingest_batches SET state = 'committed' WHERE batch_id = 'slow'")


def _hours(*hours: int) -> frozenset[dt.datetime]:
    return frozenset(dt.datetime(2026, 3, 5, h, tzinfo=dt.UTC) for h in hours)


def test_pending_read_in_steps_equals_a_fresh_read(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    rollups = engine.stats.rollups
    assert rollups.pending() == _fresh(engine) == Pending(0, 0, frozenset())

    _ingest(engine, 9, 10)
    _ingest(engine, 10)
    first = rollups.pending()
    assert first == _fresh(engine) and first.hours == _hours(9, 10) and first.last > 0

    _publishing(engine, 3)           # a batch still publishing: the ones after it stay pending
    _ingest(engine, 11)
    held = rollups.pending()
    assert held == _fresh(engine)
    assert held.last == first.last and held.hours == _hours(9, 10, 11)
    _ingest(engine, 12)
    assert rollups.pending() == _fresh(engine)  # read again past the batch that holds it back

    _commit_publishing(engine)       # it commits: the watermark may move past every batch
    done = rollups.pending()
    assert done == _fresh(engine) and done.hours == _hours(3, 9, 10, 11, 12) and done.last > held.last

    engine.stats.refresh_rollups(NOW)
    assert rollups.pending() == _fresh(engine) == Pending(done.last, done.last, frozenset())
    _ingest(engine, 12)
    assert rollups.pending() == _fresh(engine) and rollups.pending().hours == _hours(12)


def test_a_refresh_by_another_process_is_seen(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    _ingest(engine, 8)
    assert engine.stats.rollups.pending().hours == _hours(8)
    other = Rollups(engine.infra, engine.stats.drops)  # another process's rollups, same data
    other.refresh(NOW)
    assert engine.stats.rollups.pending() == _fresh(engine)
    assert not engine.stats.rollups.pending().hours
