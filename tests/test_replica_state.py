"""Two engines on one lake and one control store (two replicas, in one process): what one writes, the other
answers at once and exactly; idempotency keys hold across them. On both stores."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from engine.errors import IdempotencyKeyReused
from tests.conftest import BACKENDS, control_backend, make_record
from tests.factories import make_engine, records

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

NOW = dt.datetime(2026, 5, 4, 15, 30, tzinfo=dt.UTC)


def _total(engine) -> int:
    return engine.stats.read("all").totals.requests


def test_stats_caches_follow_the_store_not_the_process(tmp_path: Path) -> None:
    one, two = make_engine(tmp_path, NOW), make_engine(tmp_path, NOW)
    closed = [NOW.replace(hour=9, minute=m) for m in range(10)]  # an hour served from the rollups
    one.ingest_table(records(closed))
    one.stats.refresh_rollups(NOW)
    assert _total(one) == _total(two) == 10  # both now hold cached parts
    # Replica two writes late records into the rolled-up hour and refreshes the rollups: replica one's
    # cached rollup part is keyed by the hour's version in the store, so it is not served again.
    two.ingest_table(records([NOW.replace(hour=9, minute=30)] * 3))
    two.stats.refresh_rollups(NOW)
    assert _total(one) == 13
    # Raw records of the open hour another replica wrote count at once, before any refresh.
    two.ingest_table(records([NOW - dt.timedelta(minutes=5)] * 4))
    assert _total(one) == _total(two) == 17
    one.stats.refresh_rollups(NOW)
    assert _total(two) == _total(one) == 17


def test_idempotency_keys_hold_across_replicas(tmp_path: Path) -> None:
    one, two = make_engine(tmp_path, NOW), make_engine(tmp_path, NOW)
    body = b"".join(json.dumps(make_record(i)).encode() + b"\n" for i in range(5))
    first = one.ingest_body(body, "application/x-ndjson", idempotency_key="k1")
    again = two.ingest_body(body, "application/x-ndjson", idempotency_key="k1")
    assert again.replayed and again.model_dump() == first.model_dump()
    with pytest.raises(IdempotencyKeyReused):
        two.ingest_body(body.replace(b"req-0", b"req-x"), "application/x-ndjson", idempotency_key="k1")
    assert _total(one) == _total(two) == 5


@pytest.mark.parametrize("control", [BACKENDS[1]], indirect=True)  # hosts share a control store on PostgreSQL
def test_a_batch_id_begun_by_a_replica_on_another_host_meanwhile_is_answered_not_lost(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """Replicas on separate hosts do not share the publish lock: the other host may record the same batch id
    between this one's check and its own ledger insert. The batch is then answered from the other's row."""
    one = make_engine(tmp_path, NOW)
    body = b"".join(json.dumps(make_record(i)).encode() + b"\n" for i in range(5))
    other = make_engine(tmp_path / "other-host", NOW)  # its own data dir, the same control store
    raced = one.infra.lake._raced

    def meanwhile(fresh, held):  # runs under this host's publish lock, after its check for the batch id
        monkeypatch.setattr(one.infra.lake, "_raced", raced)
        other.ingest_body(body, "application/x-ndjson", idempotency_key="k1")
        return raced(fresh, held)

    monkeypatch.setattr(one.infra.lake, "_raced", meanwhile)
    again = one.ingest_body(body, "application/x-ndjson", idempotency_key="k1")
    assert again.replayed and again.records == 5
