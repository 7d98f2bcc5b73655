"""Hypothesis: any valid record goes in through ingest and comes out identical through DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Settings

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
non_empty = text.filter(lambda s: s.strip() != "")
int32 = st.integers(0, 2**31 - 1)
optional_id = st.none() | st.integers(1, 2**63 - 1)

records = st.fixed_dictionaries(
    {
        "request_id": non_empty,
        "created_at": st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31), timezones=st.just(dt.UTC)),
        "master_id": st.integers(1, 2**63 - 1),
        "key_id": st.integers(1, 2**63 - 1),
        "model": non_empty,
        "status_code": st.integers(100, 599),
        "latency_ms": int32,
        "prompt_tokens": int32,
        "completion_tokens": int32,
    },
    optional={
        "group": st.none() | text,
        "provider_id": optional_id,
        "provider_type": st.none() | text,
        "provider_key_id": optional_id,
        "error_type": st.none() | text,
        "error_message": st.none() | text,
        "ttft_ms": st.none() | int32,
        "quota_cost": st.integers(0, 2**63 - 1),
        "is_stream": st.booleans(),
        "client_ip": st.none() | text,
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(records, min_size=1, max_size=5, unique_by=lambda r: r["request_id"]), epoch_ms=st.booleans())
def test_any_valid_record_round_trips(batch, epoch_ms):
    def wire(rec):
        out = dict(rec)
        ts = rec["created_at"]
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        out["created_at"] = (ts - epoch) // dt.timedelta(milliseconds=1) if epoch_ms else ts.isoformat()
        return out

    if epoch_ms:  # epoch milliseconds carry no microseconds
        batch = [{**r, "created_at": r["created_at"].replace(microsecond=r["created_at"].microsecond // 1000 * 1000)}
                 for r in batch]
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Settings(data_dir=Path(tmp)))
        body = "\n".join(json.dumps(wire(r)) for r in batch).encode()
        engine.ingest_body(body, "application/x-ndjson")
        con = engine.connect()
        rows = con.execute("SELECT * EXCLUDE (date) FROM log_records").fetchall()
        names = [d[0] for d in con.description]
        got = sorted((dict(zip(names, r, strict=True)) for r in rows), key=lambda r: (r["created_at"], r["request_id"]))
    expected = []
    for rec in sorted(batch, key=lambda r: (r["created_at"], r["request_id"])):
        full = {name: rec.get(name) for name in names}
        full["quota_cost"] = rec.get("quota_cost", 0)
        full["is_stream"] = rec.get("is_stream", False)
        expected.append(full)
    assert [{**r, "created_at": r["created_at"].astimezone(dt.UTC)} for r in got] == expected
