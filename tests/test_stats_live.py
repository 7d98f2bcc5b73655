"""The raw part of stats answers, kept file by file (engine/stats/live.py), and the in-memory merges
(merging.py, histograms.py): answers stay exact as batches land, files are compacted and the clock moves."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pyarrow as pa
import pytest

from engine.stats import histograms, merging, topn
from tests import stats_oracle
from tests.conftest import ON_BOTH
from tests.factories import make_engine
from tests.stats_records import records

DAY = dt.date(2026, 3, 2)
MIDNIGHT = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 3, 2, 15, 40, tzinfo=dt.UTC)
OPEN = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)


def _read(engine, group_by=None):
    return engine.stats.read("today", group_by=group_by).model_dump()


def _assert_matches(engine, tables, group_by=None):
    body = _read(engine, group_by)
    want = stats_oracle.expected(stats_oracle.frame(*tables), MIDNIGHT, NOW, group_by)
    stats_oracle.check(body["totals"], want[None] if group_by is None else _total(tables), exact=False)
    if group_by:
        assert {g["group"] for g in body["groups"]} == set(want)
        for g in body["groups"]:
            stats_oracle.check(g, want[g["group"]], exact=False)
    return body


def _land(engine, tables, rows, seed, prefix, end=NOW):
    """Ingest a batch of the open hour and remember it for the recomputation."""
    batch = records(rows, seed, OPEN, end, prefix=prefix)
    engine.ingest_table(batch)
    tables.append(batch)


def _closed():
    return [records(3000, 1, MIDNIGHT, OPEN, prefix="closed")]


def _total(tables):
    return stats_oracle.expected(stats_oracle.frame(*tables), MIDNIGHT, NOW)[None]


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(tmp_path, NOW, compaction_target_rows=10_000)
    engine.ingest_table(_closed()[0])
    engine.stats.refresh_rollups(NOW)  # every closed hour rolled up; the open hour is raw
    return engine


@ON_BOTH  # also on the PostgreSQL control store
def test_each_new_batch_is_counted_and_only_new_files_are_read(engine):
    tables = _closed()
    for i in range(4):
        _land(engine, tables, 200, 10 + i, f"open{i}")
        _assert_matches(engine, tables, "key")
    parts = engine.stats.reader.live._parts
    # One kept part for the query's shape (its counts and histograms, from one read of each file, added to the
    # rollup part of the answer), holding the four open-hour files
    assert len(parts) == 1 and all(len(p.files) == 4 for p in parts.values())
    # A new file is added to the kept part, not recomputed with the others: the part is the merge
    kept = next(iter(parts.values())).table
    assert int(kept.sums["requests"].sum()) == 3000 + 800 == kept.hist.counts.sum()


def test_compaction_of_the_open_hour_changes_no_answer(engine):
    tables = _closed()
    for i in range(5):
        _land(engine, tables, 100, 20 + i, f"c{i}")
    before = _assert_matches(engine, tables, "model")
    assert engine.compactor.run(NOW).rows > 0  # the small files are merged into new ones
    after = _assert_matches(engine, tables, "model")
    assert after["totals"]["requests"] == before["totals"]["requests"] == 3500
    parts = engine.stats.reader.live._parts
    names = {f[0] for p in parts.values() for f in p.files}
    assert all(name.startswith(str(engine.settings.data_dir / "log_records")) for name in names)
    assert len({f for p in parts.values() for f in p.files}) < 5  # started over from the compacted files


def test_a_file_reaching_past_the_end_is_bounded_by_it(engine):
    tables = _closed()
    _land(engine, tables, 400, 30, "ahead", end=NOW + dt.timedelta(minutes=15))  # a clock running ahead
    _assert_matches(engine, tables)
    later = NOW + dt.timedelta(minutes=10)
    engine.clock = lambda: later
    body = _read(engine)
    assert body["totals"]["requests"] == stats_oracle.expected(stats_oracle.frame(*tables), MIDNIGHT, later)[None][
        "requests"]


def _nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[int(np.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("dense_cells", [histograms.DENSE_CELLS, 10])
def test_percentiles_of_merged_parts_equal_nearest_rank(engine, monkeypatch, dense_cells):
    monkeypatch.setattr(histograms, "DENSE_CELLS", dense_cells)  # 10: every part too big, the sorted path
    rng = random.Random(5)
    per_group: dict[str, list[int]] = {}
    parts = []
    for _ in range(3):
        rows = {"g1": [], "g2": [], "b": [], "n": []}
        for _ in range(300):
            g, b, n = rng.choice("abcde"), rng.randrange(0, 40), rng.randrange(1, 4)
            rows["g1"].append(g)
            rows["g2"].append(None)
            rows["b"].append(b)
            rows["n"].append(n)
            per_group.setdefault(g, []).extend([b] * n)
        parts.append(histograms.Histograms.of(pa.table(rows)))
    assert all((p.counts is None) == (dense_cells == 10) for p in parts)
    con = engine.connect()
    try:
        got = histograms.percentiles(con, parts, grouped=True)
        bucket_ms = dict(con.sql("SELECT b, bucket_value(b) FROM range(40) AS t(b)").fetchall())
        # a part kept as rows beside parts kept as matrices (a large rollup part, a small raw part)
        mixed = histograms.percentiles(con, [histograms.Histograms(histograms._rows(parts[0])), *parts[1:]], True)
    finally:
        con.close()
    assert sorted(map(str, mixed)) == sorted(map(str, got))
    everything = [b for bs in per_group.values() for b in bs]
    total = next(r for r in got if r["kind"] == "total")
    for name, q in histograms.QUANTILES:
        assert total[name] == bucket_ms[_nearest_rank(everything, q)]
        for row in (r for r in got if r["kind"] == "group"):
            assert row[name] == bucket_ms[_nearest_rank(per_group[row["g1"]], q)], (row, name)
    assert {r["g1"] for r in got if r["kind"] == "group"} == set(per_group)


def _fine_rows(rng: random.Random, n: int) -> list[dict]:
    return [{"g1": rng.choice(["x", "y", "z", None]), "g2": rng.choice([None, "a"]), "model": rng.choice(["m1", "m2"]),
             "master_id": rng.randrange(3), "key_id": rng.randrange(6), "b": rng.randrange(30),
             "requests": rng.randrange(1, 9), "total_tokens": rng.randrange(2**40),
             "latency_max": rng.randrange(10**6), "ttft_max": rng.choice([None, rng.randrange(500)])}
            for _ in range(n)]


def _check_tally(got, rows):
    total = next(r for r in got if r["kind"] == "total")
    assert total["requests"] == sum(r["requests"] for r in rows)
    assert total["total_tokens"] == sum(r["total_tokens"] for r in rows)
    assert total["latency_max"] == max(r["latency_max"] for r in rows)
    assert total["ttft_max"] == max((r["ttft_max"] for r in rows if r["ttft_max"] is not None), default=None)
    assert total["masters"] == len({r["master_id"] for r in rows}) and total["keys"] == len({r["key_id"] for r in rows})
    groups = {(r["g1"], r["g2"]) for r in rows}
    assert {(r["g1"], r["g2"]) for r in got if r["kind"] == "group"} == groups
    for g in groups:
        mine = [r for r in rows if (r["g1"], r["g2"]) == g]
        row = next(r for r in got if r["kind"] == "group" and (r["g1"], r["g2"]) == g)
        assert row["requests"] == sum(r["requests"] for r in mine)
        assert row["latency_max"] == max(r["latency_max"] for r in mine)
        assert row["ttft_max"] == max((r["ttft_max"] for r in mine if r["ttft_max"] is not None), default=None)
        assert row["masters"] == len({r["master_id"] for r in mine})
        assert row["keys"] == len({r["key_id"] for r in mine})
    models = {r["model"]: (r["requests"], r["total_tokens"]) for r in got if r["kind"] == "model"}
    assert models == {m: (sum(r["requests"] for r in rows if r["model"] == m),
                          sum(r["total_tokens"] for r in rows if r["model"] == m)) for m in ("m1", "m2")}


def test_a_tally_added_part_by_part_equals_plain_python():
    rng = random.Random(9)
    rows = _fine_rows(rng, 400)
    table = pa.Table.from_pylist(rows)
    # the rollup part (no buckets), then raw parts one after another, as a live answer grows
    tally = merging.Tally.of(table.slice(0, 150).drop_columns(["b"]))
    for start, stop in ((150, 151), (151, 300), (300, 300), (300, 400)):
        tally = tally.add(table.slice(start, stop - start))
    _check_tally(tally.rows(grouped=True), rows)
    assert sum(r["kind"] == "group" for r in tally.rows(grouped=False)) == 0
    # the histograms hold the raw parts' requests by bucket, per group
    hist = {}
    for r in rows[150:]:
        hist[(r["g1"], r["g2"], r["b"])] = hist.get((r["g1"], r["g2"], r["b"]), 0) + r["requests"]
    got = {(g1, g2, b): n for g1, g2, b, n in zip(*tally.hist.rows().to_pydict().values(), strict=True)}
    assert got == hist
    assert merging.Tally.of(table.slice(0, 0)).rows(grouped=True) == []


def test_a_folded_tally_equals_the_folded_rows_in_plain_python():
    rng = random.Random(4)
    rows = _fine_rows(rng, 300)
    table = pa.Table.from_pylist(rows)
    tally = merging.Tally.of(table.slice(0, 100)).add(table.slice(100))
    fold = topn.Fold.of("g1", ["x", None])
    folded = [{**r, "g1": r["g1"] if r["g1"] in ("x", None) else topn.OTHER} for r in rows]
    _check_tally(tally.fold(fold).rows(grouped=True), folded)
    hist = {}
    for r in folded:  # both parts have buckets here
        hist[(r["g1"], r["g2"], r["b"])] = hist.get((r["g1"], r["g2"], r["b"]), 0) + r["requests"]
    got = tally.fold(fold).hist.rows().to_pydict()
    assert {(g1, g2, b): n for g1, g2, b, n in zip(*got.values(), strict=True)} == hist
    # the tally it was folded from is unchanged
    _check_tally(tally.rows(grouped=True), rows)


def test_pairs_count_distinct_ids_per_group_and_in_total():
    rng = random.Random(2)
    seen: dict[int, set[int]] = {}
    pairs = merging.Pairs()
    n = 0
    for _ in range(6):  # parts one after another, new groups and new ids appearing as they go
        rows = [rng.randrange(n + 3) for _ in range(50)]
        ids = [rng.choice([None, 2**62 + rng.randrange(9), rng.randrange(5)]) for _ in rows]
        n = max(n, max(rows) + 1)
        pairs = pairs.add(np.array(rows, np.int64), pa.chunked_array([pa.array(ids, pa.int64())]), n)
        for r, i in zip(rows, ids, strict=True):
            if i is not None:
                seen.setdefault(r, set()).add(i)
        assert pairs.by_row.tolist() == [len(seen.get(r, ())) for r in range(n)]
        assert len(pairs.ids) == len(set().union(*seen.values()))
        assert len(pairs.codes) == sum(map(len, seen.values())) and (np.diff(pairs.codes) > 0).all()
    row_map = np.array([r % 2 for r in range(n)], np.int64)  # rows folded into two
    folded = pairs.fold(row_map, 2)
    assert folded.by_row.tolist() == [len(set().union(*(seen.get(r, set()) for r in range(n) if r % 2 == k)))
                                      for k in (0, 1)]
