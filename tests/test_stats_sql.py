"""Each stats .sql file on a few hand-made records, against outputs worked out by hand."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from engine import Engine, Settings, queries, zones
from engine.stats import histogram_counts
from engine.stats.reader import load_sources
from engine.tables import MAX_MEASURES, ROLLUP_SCHEMA, SUMMED_MEASURES
from tests import stats_records

DAY = dt.date(2026, 1, 1)
DAY_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
H10 = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
H11 = dt.datetime(2026, 1, 1, 11, tzinfo=dt.UTC)
BIG = 2**31 - 1
HOURS = [dt.datetime(2026, 1, 1, h, tzinfo=dt.UTC) for h in range(24)]


def rec(i, at, master, key, model, provider, pkey, status, latency, ttft=None, prompt=10, completion=5, quota=0,
        stream=False):
    return {"request_id": f"r{i}", "created_at": at, "master_id": master, "key_id": key, "model": model,
            "provider_id": provider, "provider_key_id": pkey, "status_code": status, "latency_ms": latency,
            "ttft_ms": ttft, "prompt_tokens": prompt, "completion_tokens": completion, "quota_cost": quota,
            "is_stream": stream}


RECORDS = [
    rec(1, "2026-01-01T10:15:00Z", 1, 10, "gpt-4o", 7, 70, 200, 100, ttft=20, quota=3, stream=True),
    rec(2, "2026-01-01T10:45:00Z", 1, 10, "gpt-4o", 7, 70, 399, 300, prompt=BIG, completion=BIG),
    rec(3, "2026-01-01T10:50:00Z", 1, 10, "gpt-4o", 7, 70, 429, 0),
    rec(4, "2026-01-01T11:00:00Z", 2, 20, "模型", None, None, 400, 50),
    rec(5, "2026-01-01T11:59:59.999999Z", 2, 20, "模型", None, None, 599, 1000),
    rec(6, "2026-01-01T11:30:00Z", 1, 11, "gpt-4o", 7, 71, 500, 2000),
]


def bucket(ms: int) -> int:
    """The histogram bucket, worked out independently of the SQL macro."""
    return 0 if ms == 0 else math.ceil(math.log(ms) / math.log(1.02)) + 1


@pytest.fixture
def engine(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path / "data"))
    engine.ingest_body(json.dumps(RECORDS).encode(), "application/json")
    return engine


def run(engine, name, **params):
    """Run one query on a connection with the stats macros."""
    con = engine.connect()
    try:
        load_sources(con)
        return queries.run(con, name, **params).to_pylist()
    finally:
        con.close()


def sql(con, text, params):
    """Rows of an ad-hoc query, given only the parameters it names."""
    names = set(re.findall(r"\$(\w+)", text))
    return con.sql(text, params={k: v for k, v in params.items() if k in names}).fetchall()


def files(engine):
    """The log_records files of the fixture."""
    return sorted(str(p) for p in (engine.settings.data_dir / "log_records").glob("*/*.parquet"))


def test_rollup_hours(engine):
    rows = run(engine, "rollup_hours", day=DAY, start=HOURS[0], end=HOURS[-1] + dt.timedelta(hours=1),
               hours=HOURS)
    key = {(r["hour"].hour, r["key_id"], r["status_class"]): r for r in rows}
    assert set(key) == {(10, 10, "2xx"), (10, 10, "3xx"), (10, 10, "4xx"), (11, 20, "4xx"), (11, 20, "5xx"),
                        (11, 11, "5xx")}
    ok = key[(10, 10, "2xx")]
    assert (ok["requests"], ok["successes"], ok["errors"], ok["streams"], ok["ttft_n"], ok["ttft_sum"]) == \
        (1, 1, 0, 1, 1, 20)
    big = key[(10, 10, "3xx")]
    assert big["successes"] == 1 and big["total_tokens"] == 2 * BIG and big["prompt_tokens"] == BIG
    assert (big["ttft_n"], big["ttft_sum"], big["latency_sum"], big["latency_max"]) == (0, None, 300, 300)
    limited = key[(10, 10, "4xx")]
    assert (limited["rate_limited"], limited["errors"], limited["latency_max"]) == (1, 0, 0)
    refused = key[(11, 20, "5xx")]
    assert (refused["errors"], refused["provider_failures"], refused["provider_id"]) == (1, 0, None)
    assert key[(11, 11, "5xx")]["provider_failures"] == 1
    assert key[(11, 20, "4xx")]["model"] == "模型"


def test_rollup_keep(engine):
    engine.stats.refresh_rollups(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    rows = run(engine, "rollup_keep", day=DAY, hours=[H10])
    assert sorted((r["hour"], r["key_id"], r["status_class"]) for r in rows) == [
        (H11, 11, "5xx"), (H11, 20, "4xx"), (H11, 20, "5xx")]


def _rollup(split, raw_hours=(), daily_days=()):
    return {"start": HOURS[0], "split": split, "raw_hours": list(raw_hours), "daily_days": list(daily_days)}


def _raw(engine, split, raw_hours=(), end=None):
    return {"files": files(engine), "raw_from": min([split, *raw_hours]), "split": split,
            "raw_hours": list(raw_hours), "end": end}


def latency_hours(engine, hours):
    """latency_records counted into histogram rows, as a rollup recompute does."""
    con = engine.connect()
    try:
        records = queries.run(con, "latency_records", day=DAY, start=HOURS[0], end=HOURS[-1] + dt.timedelta(hours=1),
                              hours=hours)
    finally:
        con.close()
    return histogram_counts.count(records).to_pylist()


def test_latency_records(engine):
    rows = run(engine, "latency_records", day=DAY, start=HOURS[0], end=HOURS[-1] + dt.timedelta(hours=1),
               hours=[H11])
    assert sorted((r["hour"], r["key_id"], r["lb"], r["tb"]) for r in rows) == sorted(
        (H11, r["key_id"], bucket(r["latency_ms"]), None if r["ttft_ms"] is None else bucket(r["ttft_ms"]))
        for r in RECORDS if r["created_at"].startswith("2026-01-01T11"))
    assert len(run(engine, "latency_records", day=DAY, start=HOURS[0], end=HOURS[-1] + dt.timedelta(hours=1),
                   hours=HOURS)) == len(RECORDS)


def test_latency_histograms_of_hand_made_records(engine):
    rows = latency_hours(engine, [H11])
    got = {(r["dim"], r["id"], r["metric"], r["b"]): r["n"] for r in rows}
    assert {r["hour"] for r in rows} == {H11}
    at11 = [r for r in RECORDS if r["created_at"].startswith("2026-01-01T11")]
    assert got[("gateway", None, "latency", bucket(50))] == 1
    assert sum(n for (dim, _, metric, _), n in got.items() if dim == "gateway" and metric == "latency") == len(at11)
    assert got[("provider", None, "latency", bucket(1000))] == 1  # records without a provider: id NULL
    assert got[("model", "模型", "latency", bucket(50))] == 1
    assert got[("key", "11", "latency", bucket(2000))] == 1
    assert not [k for k in got if k[2] == "ttft"]  # no stream at 11:00
    assert {k[0] for k in got} == {"gateway", "master", "key", "model", "provider", "provider_key"}
    at10 = {(r["dim"], r["id"], r["metric"], r["b"]): r["n"] for r in latency_hours(engine, HOURS)
            if r["hour"] == H10}
    assert at10[("gateway", None, "ttft", bucket(20))] == 1 and at10[("key", "10", "latency", bucket(0))] == 1


#: The histograms as one GROUP BY per dimension would give them (what latency_hourly held before they
#: were counted in one pass): the independent recomputation the counting is checked against.
GROUPED = """
WITH r AS (
    SELECT date_trunc('hour', created_at) AS hour, master_id, key_id, model, provider_id, provider_key_id,
           latency_ms, ttft_ms
    FROM read_parquet($files)
), measured AS (
    SELECT * EXCLUDE (latency_ms, ttft_ms), 'latency' AS metric, CAST(latency_bucket(latency_ms) AS SMALLINT) AS b
    FROM r
    UNION ALL
    SELECT * EXCLUDE (latency_ms, ttft_ms), 'ttft', CAST(latency_bucket(ttft_ms) AS SMALLINT) FROM r
    WHERE ttft_ms IS NOT NULL
)
SELECT hour,
       CASE WHEN GROUPING(master_id) = 0 THEN 'master' WHEN GROUPING(key_id) = 0 THEN 'key'
            WHEN GROUPING(model) = 0 THEN 'model' WHEN GROUPING(provider_id) = 0 THEN 'provider'
            WHEN GROUPING(provider_key_id) = 0 THEN 'provider_key' ELSE 'gateway' END AS dim,
       CASE WHEN GROUPING(master_id) = 0 THEN CAST(master_id AS VARCHAR)
            WHEN GROUPING(key_id) = 0 THEN CAST(key_id AS VARCHAR) WHEN GROUPING(model) = 0 THEN model
            WHEN GROUPING(provider_id) = 0 THEN CAST(provider_id AS VARCHAR)
            WHEN GROUPING(provider_key_id) = 0 THEN CAST(provider_key_id AS VARCHAR) END AS id,
       metric, b, count(*) AS n
FROM measured
GROUP BY GROUPING SETS ((hour, metric, b), (hour, master_id, metric, b), (hour, key_id, metric, b),
                        (hour, model, metric, b), (hour, provider_id, metric, b), (hour, provider_key_id, metric, b))
ORDER BY hour, dim, id NULLS FIRST, metric, b
"""


@pytest.mark.parametrize(("seed", "n", "ttft"), [(1, 5000, True), (2, 700, False), (3, 1, True)])
def test_counted_histograms_equal_one_group_by_per_dimension(tmp_path, seed, n, ttft):
    # Out of time order (hours interleaved) and, with a small dense limit, through the sorting path too.
    table = stats_records.records(n, seed, DAY_START, DAY_START + dt.timedelta(hours=30))
    table = table.take(np.random.default_rng(seed).permutation(n))
    if not ttft:
        table = table.set_column(table.schema.get_field_index("ttft_ms"), "ttft_ms", pa.nulls(n, pa.int32()))
    engine = Engine(Settings(data_dir=tmp_path / "data"))
    engine.ingest_table(table)
    con = engine.connect()
    try:
        expected = con.sql(GROUPED, params={"files": files(engine)}).to_arrow_table()
        parts = []
        for day in (DAY, DAY + dt.timedelta(days=1)):
            start = dt.datetime.combine(day, dt.time(), dt.UTC)
            every = [start + dt.timedelta(hours=h) for h in range(24)]
            parts.append(queries.run(con, "latency_records", day=day, start=start, end=start + dt.timedelta(days=1),
                                     hours=every))
    finally:
        con.close()
    got = pa.concat_tables([histogram_counts.count(p) for p in parts])
    assert got.equals(expected.cast(got.schema))
    sparse = histogram_counts.DENSE_CELLS
    try:
        histogram_counts.DENSE_CELLS = 10
        assert pa.concat_tables([histogram_counts.count(p) for p in parts]).equals(got)
    finally:
        histogram_counts.DENSE_CELLS = sparse


def test_latency_keep_rollup_day_and_latency_day(engine):
    engine.stats.refresh_rollups(dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
    kept = run(engine, "latency_keep", day=DAY, hours=[H10])
    assert {r["hour"] for r in kept} == {H11}
    daily = run(engine, "rollup_day", day=DAY)
    by = {(r["key_id"], r["provider_key_id"]): r for r in daily}
    assert set(by) == {(10, 70), (11, 71), (20, None)}
    assert (by[(10, 70)]["requests"], by[(10, 70)]["successes"], by[(10, 70)]["total_tokens"]) == (3, 2, 2 * BIG + 30)
    assert by[(10, 70)]["status_class"] is None and by[(10, 70)]["hour"] == HOURS[0]
    hist = run(engine, "latency_day", day=DAY)
    gateway = sorted((r["b"], r["n"]) for r in hist if r["dim"] == "gateway" and r["metric"] == "latency")
    assert gateway == sorted((bucket(r["latency_ms"]), 1) for r in RECORDS)
    assert [(r["b"], r["n"]) for r in hist if r["dim"] == "gateway" and r["metric"] == "ttft"] == [(bucket(20), 1)]


FILTERS = {"master_id": None, "key_id": None, "model": None, "provider_id": None, "provider_key_id": None}
UTC_ZONE = {"tz_starts": [zones.DAWN], "tz_offsets": [0]}  # the offsets of UTC (engine/zones.py)


def test_stats_sources_take_rollup_hours_and_raw_hours(engine):
    engine.stats.refresh_rollups(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))  # the day is closed: daily tier too
    con = engine.connect()
    try:
        run(engine, "stats_sources")  # defines the macros without error
        load_sources(con)
        p = {"s": HOURS[0], "e": HOURS[-1], "split": H11, "files": files(engine)}
        # 10:00 from rollups (3 grain rows), 11:00 from raw (3 single records), nothing counted twice
        rolled = sql(con, "SELECT hour, requests FROM stats_rows($s, $split, [], [], NULL, NULL, NULL, NULL, NULL)", p)
        raw = sql(con, "SELECT hour, requests FROM stats_raw_rows($files, $split, $split, $e, [], NULL, NULL, NULL,"
                    " NULL, NULL)", p)
        assert sorted(r[0] for r in rolled) == [H10] * 3 and [r[1] for r in rolled] == [1, 1, 1]
        assert sorted(raw) == [(H11, 1)] * 3
        # the dirty hour 10:00 comes from raw too, for master 1 only (records 1, 2, 3 and 6)
        dirty = sql(con, "SELECT count(*), sum(requests) FROM stats_raw_rows($files, $s, $split, $e,"
                        " [$s + INTERVAL 10 HOUR], 1, NULL, NULL, NULL, NULL)", p)[0]
        assert dirty == (4, 4)
        rolled_out = sql(con, "SELECT count(*) FROM stats_rows($s, $split, [$s + INTERVAL 10 HOUR], [], NULL,"
                             " NULL, NULL, NULL, NULL)", p)[0]
        assert rolled_out == (0,)
        # end NULL reads a file to its end: with the split at midnight every record is raw
        hist = sql(con, "SELECT b, sum(requests) FROM stats_raw_fine($files, $s, $s, NULL, [], NULL, NULL, NULL, NULL,"
                       " NULL, 'none', 'none', $tz_starts, $tz_offsets, true) GROUP BY b ORDER BY b", {**p, **UTC_ZONE})
        assert hist == sorted((bucket(r["latency_ms"]), 1) for r in RECORDS)
        # a closed day from the daily tier: the same rows, nothing from the hourly tier
        day = {"s": HOURS[0], "e": HOURS[0] + dt.timedelta(days=1)}
        total = sql(con, "SELECT sum(requests) FROM stats_rows($s, $e, [], [DATE '2026-01-01'], NULL, NULL, NULL,"
                        " NULL, NULL)", day)
        assert total == [(len(RECORDS),)]
        key = sql(con, "SELECT id, sum(n) FROM stats_latency_rows($s, $e, [], [DATE '2026-01-01'], 'key', '20')"
                      " GROUP BY id", day)
        assert key == [("20", 2)]
    finally:
        con.close()


def test_stats_fine_and_stats_hist_read_only_rollups(engine):
    engine.stats.refresh_rollups(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    day = _rollup(HOURS[-1] + dt.timedelta(hours=1), daily_days=[DAY])
    fine = run(engine, "stats_fine", **day, **FILTERS, group_by="model", then_by="none", **UTC_ZONE)
    assert sorted((r["g1"], r["key_id"], r["requests"]) for r in fine) == [
        ("gpt-4o", 10, 3), ("gpt-4o", 11, 1), ("模型", 20, 2)]
    # the same day from the hourly tier (not listed in daily_days), minus a dirty hour left to raw
    hourly = run(engine, "stats_fine", **_rollup(HOURS[-1] + dt.timedelta(hours=1), raw_hours=[H11]), **FILTERS,
                 group_by="none", then_by="none", **UTC_ZONE)
    assert sum(r["requests"] for r in hourly) == 3
    assert run(engine, "stats_fine", **_rollup(HOURS[0]), **FILTERS, group_by="none", then_by="none", **UTC_ZONE) == []
    hist = run(engine, "stats_hist", **day, dim="key", dim_id="10", group_by="day", then_by="none", **UTC_ZONE)
    assert sorted((r["g1"], r["b"], r["n"]) for r in hist) == sorted(
        ("2026-01-01", bucket(ms), 1) for ms in (100, 300, 0))


def test_stats_live_fine_and_live_hist(engine):
    # the raw part: the dirty hour 11:00 and everything from 23:00 on (nothing), by model
    live = run(engine, "stats_live_fine", **_raw(engine, HOURS[-1], raw_hours=[H11], end=None), **FILTERS,
               group_by="model", then_by="none", **UTC_ZONE, buckets=False)
    assert {r["b"] for r in live} == {None}
    by = {(r["g1"], r["key_id"]): r for r in live}
    assert set(by) == {("模型", 20), ("gpt-4o", 11)}
    assert (by[("模型", 20)]["requests"], by[("模型", 20)]["errors"], by[("模型", 20)]["latency_max"]) == (2, 2, 1000)
    assert by[("gpt-4o", 11)]["provider_failures"] == 1
    # a bounded end leaves out 11:59:59.999999
    bounded = run(engine, "stats_live_fine", **_raw(engine, HOURS[-1], raw_hours=[H11], end=H11 + dt.timedelta(
        minutes=59)), **FILTERS, group_by="none", then_by="none", **UTC_ZONE, buckets=False)
    assert sum(r["requests"] for r in bounded) == 2
    # with buckets, requests by (g1, b) are the histograms of the answer's dimension (key), filters applied
    for key_id in (None, 20):
        rows = run(engine, "stats_live_fine", **_raw(engine, HOURS[0]), **{**FILTERS, "key_id": key_id}, group_by="key",
                   then_by="none", **UTC_ZONE, buckets=True)
        hist = Counter()
        for r in rows:
            hist[(r["g1"], r["b"])] += r["requests"]
        assert hist == Counter((str(r["key_id"]), bucket(r["latency_ms"])) for r in RECORDS
                               if key_id in (None, r["key_id"]))


def test_stats_exact(engine):
    rows = run(engine, "stats_exact", files=files(engine), start=HOURS[0], end=HOURS[-1], **FILTERS,
               group_by="master", then_by="none", **UTC_ZONE,
               keep_g1=None, keep_g2=None)
    total = next(r for r in rows if r["kind"] == "total")
    # nearest rank of [0, 50, 100, 300, 1000, 2000]: p50 = 3rd, p95 = p99 = 6th
    assert (total["p50"], total["p95"], total["p99"]) == (100, 2000, 2000)
    by_master = {r["g1"]: (r["p50"], r["p99"]) for r in rows if r["kind"] == "group"}
    assert by_master == {"1": (100, 2000), "2": (50, 1000)}


def test_merge_rules_in_sql_and_python_agree(engine):
    con = engine.connect()
    try:
        names = [f.name for f in ROLLUP_SCHEMA]
        summed = con.sql("SELECT list(c) FROM unnest($n) AS t(c) WHERE summed_measure(c)", params={"n": names})
        maxed = con.sql("SELECT list(c) FROM unnest($n) AS t(c) WHERE max_measure(c)", params={"n": names})
        assert summed.fetchall()[0][0] == list(SUMMED_MEASURES)
        assert maxed.fetchall()[0][0] == list(MAX_MEASURES)
    finally:
        con.close()


def test_daily_stats(engine):
    engine.stats.refresh_rollups(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    con = engine.connect()
    try:
        rows = queries.run(con, "daily_stats", day=DAY, top=1).to_pylist()
    finally:
        con.close()
    by = {(r["grain"], r["master_id"], r["key_id"], r["model"], r["provider_id"], r["provider_key_id"]): r
          for r in rows}
    gateway = by[("gateway", None, None, None, None, None)]
    assert (gateway["requests"], gateway["masters"], gateway["keys"], gateway["streams"]) == (6, 2, 3, 1)
    assert gateway["top_models"] == [{"model": "gpt-4o", "requests": 4, "total_tokens": 2 * BIG + 45}]
    assert gateway["ttft_p95"] == pytest.approx(20, rel=0.01) and gateway["ttft_avg"] == 20
    assert gateway["latency_avg"] == pytest.approx(3450 / 6)
    refused = by[("provider", None, None, None, None, None)]
    assert (refused["requests"], refused["errors"], refused["keys"]) == (2, 2, 1)
    assert by[("provider_key", None, None, None, None, 71)]["provider_failures"] == 1
    assert by[("model", None, None, "模型", None, None)]["top_models"] == [
        {"model": "模型", "requests": 2, "total_tokens": 30}]
    assert {r["grain"] for r in rows} == {"gateway", "master", "key", "model", "provider", "provider_key"}
    assert len(rows) == 1 + 2 + 3 + 2 + 2 + 3


def test_daily_stats_read(engine):
    engine.stats.run_daily(dt.datetime(2026, 1, 2, 1, tzinfo=dt.UTC))
    con = engine.connect()
    try:
        rows = queries.run(con, "daily_stats_read", first=DAY, last=DAY, grain="master",
                           **{**IDS, "master_id": 2}).to_pylist()
        every = queries.run(con, "daily_stats_read", first=DAY, last=DAY, grain="master", **IDS)
        keys = queries.run(con, "daily_stats_read", first=DAY, last=DAY, grain="key", **IDS)
        one_model = queries.run(con, "daily_stats_read", first=DAY, last=DAY, grain="model",
                                **{**IDS, "model": "模型"}).to_pylist()
    finally:
        con.close()
    assert [(r["date"], r["master_id"], r["requests"]) for r in rows] == [(DAY, 2, 2)]
    assert every.column("master_id").to_pylist() == [1, 2]
    assert len(keys) == 3 and set(keys.column("grain").to_pylist()) == {"key"}
    assert [(r["model"], r["requests"]) for r in one_model] == [("模型", 2)]


IDS = {"master_id": None, "key_id": None, "model": None, "provider_id": None, "provider_key_id": None}


def test_latency_bucket_macros_are_within_one_percent(engine):
    con = engine.connect()
    try:
        worst = con.sql("SELECT max(abs(bucket_value(latency_bucket(v)) - v) / v), "
                        "bool_and(latency_bucket(v) = CAST(ceil(ln(v) / ln(1.02)) AS INTEGER) + 1) "
                        "FROM (SELECT unnest(range(1, 200000)) AS v UNION ALL SELECT 2147483647)").fetchall()[0]
        zero = con.sql("SELECT latency_bucket(0), bucket_value(0)").fetchall()[0]
    finally:
        con.close()
    assert worst[0] < 0.01 and worst[1]
    assert zero == (0, 0.0)


def test_bucket_values(engine):
    rows = run(engine, "bucket_values", buckets=[0, 1, 300])
    assert [r["b"] for r in rows] == [0, 1, 300]
    assert rows[0]["ms"] == 0.0 and rows[1]["ms"] == pytest.approx(2 / 2.02)
    assert rows[2]["ms"] == pytest.approx(2 * 1.02 ** 299 / 2.02)  # within 1 % of every value in the bucket
