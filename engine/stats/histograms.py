"""Nearest-rank percentiles over merged log-scale latency histograms (the buckets of definitions.sql).

A month grouped by key merges ~250k (group, bucket) rows. A window query over them costs ~100 ms in
DuckDB; here the cached rollup part is kept as a group x bucket count matrix, the raw part is added
to it and each quantile is a cumulative sum and a comparison: a few ms. The answer is the same: per
group, the smallest bucket whose cumulative count reaches ceil(q * total).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from engine import queries

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
HIST_COLUMNS = ("g1", "g2", "b", "n")
DENSE_CELLS = 4_000_000  # groups x buckets up to which a part is kept as a matrix (32 MB); larger: sorted
_SCHEMA = pa.schema([("g1", pa.string()), ("g2", pa.string()), ("b", pa.int32()), ("n", pa.int64())])

Group = tuple[str | None, str | None]
BUCKETS = 2048  # latency_bucket of the largest latency_ms (2^31 - 1) is 1087
_BUCKET_MS: np.ndarray | None = None


@dataclass(frozen=True)
class Histograms:
    """Histogram rows (g1, g2, b, n) of one part, and the same as a matrix when it is small enough."""

    table: pa.Table                       # the rows; empty when the matrix holds them
    groups: list[Group] | None = None     # the matrix's rows
    counts: np.ndarray | None = None      # int64 groups x buckets (its running sums cost ~1/5 of float64's)

    @classmethod
    def of(cls, table: pa.Table) -> Histograms:
        """A part's rows, with their matrix unless it would pass DENSE_CELLS."""
        table = table.select(HIST_COLUMNS).cast(_SCHEMA)
        if table.num_rows == 0:
            return cls(table, [], np.zeros((0, 1), dtype=np.int64))
        codes, groups = group_codes(table)
        b = table["b"].to_numpy().astype(np.int64)
        width = int(b.max()) + 1
        if len(groups) * width > DENSE_CELLS:
            return cls(table)
        # bincount sums weights as float64: exact below 2^53 records, then kept as int64.
        counts = np.bincount(codes * width + b, weights=table["n"].to_numpy(), minlength=len(groups) * width)
        return cls(table.slice(0, 0), groups, counts.astype(np.int64).reshape(len(groups), width))

    @cached_property
    def index(self) -> dict[Group, int]:
        """Each matrix row's group to its position; made once per part (a cached rollup part serves many
        requests)."""
        return {group: i for i, group in enumerate(self.groups or ())}

    @property
    def num_rows(self) -> int:
        """What keeping the part costs, in rows or matrix cells."""
        return int(self.counts.size) if self.counts is not None else int(self.table.num_rows)

    def rows(self) -> pa.Table:
        """The part's (g1, g2, b, n) rows, from its matrix if it has one."""
        return _rows(self)

    def add_rows(self, table: pa.Table) -> Histograms:
        """This part and (g1, g2, b, n) rows (a new lake file's), merged: the matrix copied once and the rows
        added to it, where `add` would make a matrix of them and then a third of both."""
        if self.counts is None or self.groups is None or table.num_rows == 0:
            return self.add(Histograms.of(table))
        codes, found = group_codes(table)
        groups, _, rows = placed(found, self.groups, self.index)
        b = table["b"].to_numpy().astype(np.int64)
        width = max(self.counts.shape[1], int(b.max()) + 1)
        if len(groups) * width > DENSE_CELLS:
            return self.add(Histograms.of(table))
        if (len(groups), width) == self.counts.shape:
            counts = self.counts.copy()
        else:
            counts = np.zeros((len(groups), width), np.int64)
            counts[: self.counts.shape[0], : self.counts.shape[1]] = self.counts
        np.add.at(counts, (rows[codes], b), table["n"].to_numpy().astype(np.int64))
        return Histograms(self.table, groups, counts)

    def add(self, other: Histograms) -> Histograms:
        """This part and another of the same shape, merged."""
        if self.counts is None or other.counts is None:
            return Histograms.of(pa.concat_tables([_rows(self), _rows(other)]))
        groups, counts = _merged([self, other])
        return Histograms(self.table, groups, counts[: len(groups)])


def percentiles(con: duckdb.DuckDBPyConnection, parts: list[Histograms], grouped: bool) -> list[dict[str, Any]]:
    """p50/p95/p99 (ms) of the merged parts: the total and, if `grouped`, each (g1, g2) group.

    Rows: {kind: 'total' | 'group', g1, g2, p50, p95, p99}, as stats_exact gives them.
    """
    if all(p.counts is not None for p in parts):
        groups, counts = _merged(parts)
        if not counts.any():
            return []
        total = _dense_ranks(counts.sum(axis=0, keepdims=True))
        keep = np.flatnonzero(counts.sum(axis=1) > 0) if grouped else np.zeros(0, dtype=np.int64)
        by_group = _dense_ranks(counts[keep])
        names = [groups[i] for i in keep.tolist()]
    else:
        table = pa.concat_tables([_rows(p) for p in parts])
        if table.num_rows == 0:
            return []
        codes, all_groups = group_codes(table)
        b, n = table["b"].to_numpy().astype(np.int64), table["n"].to_numpy()
        total = _sorted_ranks(np.zeros(len(b), dtype=np.int64), b, n)[1]
        present, by_group = _sorted_ranks(codes, b, n) if grouped else (np.zeros(0, dtype=np.int64), {})
        names = [all_groups[i] for i in present.tolist()]
    ms = _bucket_ms(con)
    total_ms = {q: ms[total[q]].tolist() for q, _ in QUANTILES}
    group_ms = {q: ms[by_group[q]].tolist() for q, _ in QUANTILES} if names else {}
    rows = [{"kind": "total", "g1": None, "g2": None, **{q: total_ms[q][0] for q, _ in QUANTILES}}]
    rows += [{"kind": "group", "g1": g1, "g2": g2, **{q: group_ms[q][i] for q, _ in QUANTILES}}
             for i, (g1, g2) in enumerate(names)]
    return rows


def _bucket_ms(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Every bucket's representative latency (bucket_value in definitions.sql), asked of DuckDB once."""
    global _BUCKET_MS
    if _BUCKET_MS is None:
        values = queries.run(con, "bucket_values", buckets=list(range(BUCKETS))).to_pydict()
        _BUCKET_MS = np.array(values["ms"], dtype=np.float64)
    return _BUCKET_MS


def _rows(part: Histograms) -> pa.Table:
    """A part's (g1, g2, b, n) rows, rebuilt from its matrix if it has one."""
    if part.counts is None or not part.groups:
        return part.table
    groups, b = np.nonzero(part.counts)
    return pa.table({"g1": [part.groups[g][0] for g in groups.tolist()],
                     "g2": [part.groups[g][1] for g in groups.tolist()],
                     "b": pa.array(b, pa.int32()), "n": pa.array(part.counts[groups, b].astype(np.int64))},
                    schema=_SCHEMA)


def group_codes(table: pa.Table) -> tuple[np.ndarray, list[Group]]:
    """Each row's (g1, g2) group as a number 0 .. len(groups) - 1, and the groups."""
    g1 = table["g1"].combine_chunks().dictionary_encode(null_encoding="encode")
    g2 = table["g2"].combine_chunks().dictionary_encode(null_encoding="encode")
    width = max(len(g2.dictionary), 1)
    pairs = (g1.indices.to_numpy(zero_copy_only=False).astype(np.int64) * width
             + g2.indices.to_numpy(zero_copy_only=False).astype(np.int64))
    size = len(g1.dictionary) * width
    if size <= DENSE_CELLS:
        # Number the pairs present without sorting: mark them, then count the marks before each.
        seen = np.zeros(size, dtype=bool)
        seen[pairs] = True
        used, codes = np.flatnonzero(seen), (np.cumsum(seen) - 1)[pairs]
    else:
        used, codes = np.unique(pairs, return_inverse=True)
    names1, names2 = g1.dictionary.to_pylist(), g2.dictionary.to_pylist()
    return codes, [(names1[p // width], names2[p % width]) for p in used.tolist()]


def placed(found: list[Group], groups: list[Group], index: dict[Group, int]
           ) -> tuple[list[Group], dict[Group, int], np.ndarray]:
    """The row of each group `found` among `groups` (`index` their rows), with the groups not there yet appended:
    to copies of `groups` and `index`, which are left as they are (a kept part may be read meanwhile)."""
    rows = np.empty(len(found), np.int64)
    grown = False
    for j, group in enumerate(found):
        row = index.get(group)
        if row is None:
            if not grown:
                groups, index, grown = list(groups), dict(index), True
            row = index[group] = len(groups)
            groups.append(group)
        rows[j] = row
    return groups, index, rows


def _merged(parts: list[Histograms]) -> tuple[list[Group], np.ndarray]:
    """The parts' matrices added up, rows aligned by group: the first part's rows keep their positions
    (its index is reused), the groups only later parts have follow."""
    dense = [p for p in parts if p.counts is not None and p.groups]
    first = dense[0] if dense else None
    if len(dense) == 1 and first is not None and first.groups is not None and first.counts is not None:
        return first.groups, first.counts  # one part: read as it is, not copied (callers do not write to it)
    groups: list[Group] = list(first.groups or ()) if first is not None else []
    index: dict[Group, int] = dict(first.index) if first is not None else {}
    for part in parts:
        if part is first:
            continue
        for group in part.groups or ():
            if group not in index:
                index[group] = len(groups)
                groups.append(group)
    width = max(p.counts.shape[1] for p in parts if p.counts is not None)
    counts = np.zeros((max(len(groups), 1), width), dtype=np.int64)
    for part in parts:
        if part.counts is not None and part.groups:
            if part is first:
                counts[: len(part.groups), : part.counts.shape[1]] += part.counts
                continue
            rows = np.fromiter((index[g] for g in part.groups), dtype=np.int64, count=len(part.groups))
            counts[rows, : part.counts.shape[1]] += part.counts
    return groups, counts


def _dense_ranks(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per matrix row (a group with records): the nearest-rank bucket of each quantile.

    One running count over the whole matrix, row after row, and a binary search per quantile: the
    first cell of a row whose running count reaches (the count before the row) + ceil(q * row total)
    is the row's bucket; it cannot fall in an earlier row (the rank is at least 1) nor a later one. A
    cumulative sum per row and a comparison per cell per quantile, as before, cost more.
    """
    rows, width = counts.shape
    if rows == 0:
        return {name: np.zeros(0, dtype=np.int64) for name, _ in QUANTILES}
    cum = counts.cumsum(axis=None)
    ends = cum[width - 1::width]
    before = np.r_[0, ends[:-1]]
    total = ends - before
    base = np.arange(rows, dtype=np.int64) * width
    return {name: np.searchsorted(cum, before + np.ceil(q * total).astype(np.int64), side="left") - base
            for name, q in QUANTILES}


def _sorted_ranks(groups: np.ndarray, b: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """As _dense_ranks, for rows too many for a matrix: the groups present and their buckets."""
    order = np.lexsort((b, groups))
    groups, b, n = groups[order], b[order], n[order]
    cum = np.cumsum(n)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)] - 1
    before = cum[starts] - n[starts]
    total = cum[ends] - before
    # The first row of a group whose running count reaches the rank: running counts only grow, so one
    # binary search over all groups at once finds it (it cannot fall before the group's first row).
    found = {name: b[np.searchsorted(cum, before + np.ceil(q * total), side="left")] for name, q in QUANTILES}
    return groups[starts], found
