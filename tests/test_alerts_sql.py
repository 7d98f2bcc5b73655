"""Each alert_*.sql file on small hand-made rows with the expected output, and against polars on generated data."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pyarrow as pa
import pytest

from engine import Engine, Settings, queries
from engine.alerts.detector import window_params
from engine.alerts.rules import Window

T0 = dt.datetime(2026, 3, 9, 23, 58, tzinfo=dt.UTC)


def row(seconds: float, master: int, key: int, status: int, pkey: int | None = 5, tokens: tuple[int, int] = (1, 2)):
    return {"request_id": f"{seconds}-{master}-{key}-{status}-{random.random()}",
            "created_at": T0 + dt.timedelta(seconds=seconds), "master_id": master, "key_id": key,
            "model": "m", "provider_key_id": pkey, "status_code": status, "latency_ms": 1,
            "prompt_tokens": tokens[0], "completion_tokens": tokens[1]}


# Two days (the window crosses midnight), one row just outside each end.
ROWS = [
    row(-0.000001, 1, 10, 500),              # before the window
    row(0, 1, 10, 200),                      # at the start: in, bucket 0
    row(30, 1, 10, 429, pkey=None),
    row(59.999, 1, 11, 503, tokens=(100, 0)),
    row(60, 1, 11, 500),                     # bucket 1 (the next minute, on the next day: 23:59)
    row(119, 2, 20, 404, pkey=6),
    row(120, 2, 20, 502, pkey=6),            # 00:00 next day, bucket 2
    row(179.999999, 2, 21, 200, pkey=None),
    row(180, 2, 21, 500),                    # at the end: out
]


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("sql")))
    engine.ingest_table(pa.Table.from_pylist(ROWS))
    con = engine.connect()
    yield con
    con.close()


WINDOW = Window(T0, T0 + dt.timedelta(minutes=3))


def run(con, name: str, bucket: int | None = 60) -> list[tuple]:
    return [tuple(r.values()) for r in queries.run(con, name, **window_params(WINDOW, bucket)).to_pylist()]


def test_window_params_cover_both_days():
    p = window_params(WINDOW)
    assert (p["start_day"], p["end_day"]) == (dt.date(2026, 3, 9), dt.date(2026, 3, 10))
    assert p["bucket_seconds"] == 181
    ends_at_midnight = window_params(Window(T0, dt.datetime(2026, 3, 10, tzinfo=dt.UTC)))
    assert ends_at_midnight["end_day"] == dt.date(2026, 3, 9)


def test_alert_rate_limit(con):
    assert run(con, "alert_rate_limit") == [(0, 1, 3, 1), (1, 1, 1, 0), (1, 2, 1, 0), (2, 2, 2, 0)]
    assert run(con, "alert_rate_limit", None) == [(0, 1, 4, 1), (0, 2, 3, 0)]


def test_alert_error_spike(con):
    # 429 is not an error; 404, 500, 502, 503 are.
    assert run(con, "alert_error_spike") == [
        (0, 10, 1, 2, 0), (0, 11, 1, 1, 1), (1, 11, 1, 1, 1), (1, 20, 2, 1, 1), (2, 20, 2, 1, 1), (2, 21, 2, 1, 0)]


def test_alert_provider_down(con):
    # Unrouted requests are left out; 404 is not a provider failure.
    assert run(con, "alert_provider_down") == [(0, 5, 2, 1), (1, 5, 1, 1), (1, 6, 1, 0), (2, 6, 1, 1)]


def test_alert_traffic(con):
    assert run(con, "alert_traffic") == [(0, 1, 3, 106), (1, 1, 1, 3), (1, 2, 1, 3), (2, 2, 2, 6)]


def test_queries_match_polars_on_generated_data(tmp_path):
    rng = random.Random(5)
    start = dt.datetime(2026, 3, 10, 11, 0, tzinfo=dt.UTC)
    rows = [row(0, 1, 1, 200) | {
        "request_id": f"g{i}", "created_at": start + dt.timedelta(seconds=rng.uniform(0, 3 * 3600)),
        "master_id": rng.randint(1, 5), "key_id": rng.randint(1, 20),
        "status_code": rng.choice([200, 200, 429, 500, 404]),
        "provider_key_id": rng.choice([None, 1, 2, 3]), "prompt_tokens": rng.randint(0, 900),
        "completion_tokens": rng.randint(0, 900)} for i in range(5000)]
    engine = Engine(Settings(data_dir=tmp_path))
    engine.ingest_table(pa.Table.from_pylist(rows))
    window = Window(start + dt.timedelta(minutes=37), start + dt.timedelta(minutes=97))
    frame = pl.DataFrame(rows).filter((pl.col("created_at") >= window.start) & (pl.col("created_at") < window.end))
    con = engine.connect()
    got = queries.run(con, "alert_traffic", **window_params(window))
    expected = frame.group_by("master_id").agg(
        pl.len().alias("requests"), (pl.col("prompt_tokens") + pl.col("completion_tokens")).sum().alias("tokens"))
    assert {r["master_id"]: (r["requests"], r["tokens"]) for r in got.to_pylist()} == {
        r["master_id"]: (r["requests"], r["tokens"]) for r in expected.to_dicts()}
    got = queries.run(con, "alert_error_spike", **window_params(window, 60))
    per_key = {}
    for r in got.to_pylist():
        a, b = per_key.get(r["key_id"], (0, 0))
        per_key[r["key_id"]] = (a + r["requests"], b + r["errors"])
    expected = frame.group_by("key_id").agg(
        pl.len().alias("requests"), ((pl.col("status_code") >= 400) & (pl.col("status_code") != 429)).sum().alias("e"))
    assert per_key == {r["key_id"]: (r["requests"], r["e"]) for r in expected.to_dicts()}
    assert {r["bucket"] for r in got.to_pylist()} == set(range(60))


def test_alert_traffic_live(con):
    rows = queries.run(con, "alert_traffic_live", start=T0 - dt.timedelta(minutes=1),
                       day_start=dt.datetime(2026, 3, 10, tzinfo=dt.UTC), baseline_start=T0,
                       surge_start=T0 + dt.timedelta(minutes=2), window_start=T0 + dt.timedelta(seconds=150),
                       end=T0 + dt.timedelta(minutes=3), start_day=T0.date(), end_day=dt.date(2026, 3, 10),
                       baseline_minutes=2)
    # Day (from 00:00 on the 10th, i.e. T0 + 2m): master 2 x2 (6 tokens). RPM window [T0+2.5m, T0+3m):
    # master 2 x1 (3 tokens). Surge [T0+2m, T0+3m): master 2 x2. Baseline [T0, T0+2m): master 1 x4,
    # master 2 x1, in minutes 0 and 1 of the baseline; the row just before T0 is in no column.
    assert [tuple(r.values()) for r in rows.to_pylist()] == [(1, 0, 0, 0, 0, 0, 4, 2), (2, 2, 6, 1, 3, 2, 1, 2)]


def test_alert_minutes(con):
    got = [(r["minute"], r["master_id"], r["key_id"], r["provider_key_id"], r["rate_limited"], r["error"],
            r["failure"], r["tokens"])
           for r in queries.run(con, "alert_minutes", start=WINDOW.start, end=WINDOW.end, start_day=T0.date(),
                                end_day=dt.date(2026, 3, 10)).to_pylist()]
    assert sorted(got, key=str) == sorted([
        (0, 1, 10, 5, False, False, False, 3), (0, 1, 10, None, True, False, False, 3),
        (0, 1, 11, 5, False, True, True, 100), (1, 1, 11, 5, False, True, True, 3),
        (1, 2, 20, 6, False, True, False, 3), (2, 2, 20, 6, False, True, True, 3),
        (2, 2, 21, None, False, False, False, 3)], key=str)


@pytest.mark.parametrize("seed", [1, 2])
def test_backtest_minute_counts_equal_the_window_queries_per_minute(tmp_path, seed):
    # The backtest's one-pass counts against each rule's own query over one-minute buckets.
    from engine.alerts.backtest import minute_counts

    rng = random.Random(seed)
    start = dt.datetime(2026, 3, 10, 22, 0, tzinfo=dt.UTC)
    rows = [row(0, 1, 1, 200) | {
        "request_id": f"m{i}", "created_at": start + dt.timedelta(seconds=rng.uniform(-60, 4 * 3600)),
        "master_id": rng.randint(1, 4), "key_id": rng.randint(1, 30),
        "status_code": rng.choice([200, 201, 429, 500, 503, 404]),
        "provider_key_id": rng.choice([None, 1, 2, 3, 10**12]), "prompt_tokens": rng.randint(0, 2**31 - 1),
        "completion_tokens": rng.randint(0, 900)} for i in range(4000)]
    engine = Engine(Settings(data_dir=tmp_path))
    engine.ingest_table(pa.Table.from_pylist(rows))
    span = Window(start, start + dt.timedelta(hours=3, minutes=17))   # across midnight
    con = engine.connect()
    counts = minute_counts(con, span)
    for rule, (query, scope, first, second) in {
        "rate_limit": ("alert_rate_limit", "master_id", "requests", "rate_limited"),
        "error_spike": ("alert_error_spike", "key_id", "requests", "errors"),
        "provider_down": ("alert_provider_down", "provider_key_id", "requests", "failures"),
        "traffic_spike": ("alert_traffic", "master_id", "requests", "tokens"),
    }.items():
        expected = {(r["bucket"], r[scope]): (r[first], r[second])
                    for r in queries.run(con, query, **window_params(span, 60)).to_pylist()}
        c = counts[rule]
        got = {}
        for minute in range(c.first.shape[0] - 1):
            for column, scope_id in enumerate(c.ids):
                pair = (int(c.first[minute + 1, column] - c.first[minute, column]),
                        int(c.second[minute + 1, column] - c.second[minute, column]))
                if pair != (0, 0):
                    got[(minute, scope_id)] = pair
        assert got == expected, rule
        assert c.ids == sorted(c.ids)
    masters = {r["key_id"]: r["master_id"] for r in queries.run(con, "alert_error_spike", **window_params(span))
               .to_pylist()}
    assert counts["error_spike"].masters == masters
    con.close()
