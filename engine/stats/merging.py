"""Merging partial aggregates in memory: the rollup part and the raw part of an answer, or two raw parts.

The parts are small Arrow tables (thousands of rows) that DuckDB already computed from the lake. Merging
them is a sum, a max and two distinct counts; DuckDB spends ~15 ms planning and scheduling such a query
whatever its size, Arrow's grouping ~2 ms, and a dashboard request holds three or four of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from engine.stats.histograms import Histograms
from engine.tables import MAX_MEASURES, SUMMED_MEASURES

FINE_KEYS = ("g1", "g2", "model", "master_id", "key_id")
DISTINCT_NAMES = {"master_id": "masters", "key_id": "keys"}  # what the distinct counts are called


def concat(parts: list[pa.Table]) -> pa.Table:
    """One table of parts with the same columns (types unified: a part from raw records may be narrower)."""
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def add_fine(held: pa.Table, fresh: pa.Table) -> pa.Table:
    """Two parts of stats_fine rows (of the same plan and shape) merged to their grain again."""
    return _group(concat([held, fresh]), FINE_KEYS, _measures(held))


@dataclass(frozen=True)
class CountsAndHistograms:
    """A raw part read with its latency buckets (stats_live_fine with $buckets): its stats_fine rows and its
    histograms. One read of a new lake file gives both; reading it once for each cost twice the binding of
    the stats macros, most of a live request's query time."""

    fine: pa.Table
    hist: Histograms

    @classmethod
    def of(cls, table: pa.Table) -> CountsAndHistograms:
        """Split stats_live_fine rows by bucket into counts (summed over the buckets) and histograms."""
        counts = _group(table, ("g1", "g2", "b"), [("requests", "sum")]).rename_columns(["g1", "g2", "b", "n"])
        return cls(_group(table, FINE_KEYS, _measures(table)), Histograms.of(counts))

    @property
    def num_rows(self) -> int:
        """What keeping the part costs (see Histograms.num_rows)."""
        return self.fine.num_rows + self.hist.num_rows

    def add(self, other: CountsAndHistograms) -> CountsAndHistograms:
        """This part and another of the same shape, merged."""
        return CountsAndHistograms(add_fine(self.fine, other.fine), self.hist.add(other.hist))


def metrics(parts: list[pa.Table], grouped: bool, check: Callable[[pa.Table], None] | None = None
            ) -> list[dict[str, Any]]:
    """The SPEC metrics from stats_fine rows: the total, each (g1, g2) group if `grouped`, each model.

    Rows: {kind: 'total' | 'group' | 'model', g1, g2, model, the measures, masters, keys}; model rows
    carry requests and total_tokens (what top models list). `check` sees the groups (an Arrow table with
    g1 and g2) before they become Python rows, and may raise to refuse an answer too big to build.
    """
    table = concat(parts)
    if table.num_rows == 0:
        return []
    full = [*_measures(table), ("master_id", "count_distinct"), ("key_id", "count_distinct")]
    sets: list[tuple[str, tuple[str, ...], list[tuple[str, str]]]] = [("total", (), full)]
    if grouped:
        sets.append(("group", ("g1", "g2"), full))
    sets.append(("model", ("model",), [("requests", "sum"), ("total_tokens", "sum")]))
    rows = []
    for kind, keys, aggregates in sets:
        out = _group(table, keys, aggregates)
        if kind == "group" and check is not None:
            check(out)
        out = out.rename_columns([DISTINCT_NAMES.get(c, c) for c in out.column_names])
        blank = {"kind": kind, "g1": None, "g2": None, "model": None}
        rows += [{**blank, **row} for row in out.to_pylist()]
    return rows


def _measures(table: pa.Table) -> list[tuple[str, str]]:
    return ([(c, "sum") for c in SUMMED_MEASURES if c in table.column_names]
            + [(c, "max") for c in MAX_MEASURES if c in table.column_names])


def _group(table: pa.Table, keys: tuple[str, ...], aggregates: list[tuple[str, str]]) -> pa.Table:
    """GROUP BY keys, with each aggregate's column keeping its own name."""
    out = table.group_by(list(keys), use_threads=False).aggregate(aggregates)
    names = {f"{column}_{fn}": column for column, fn in aggregates}
    return out.rename_columns([names.get(name, name) for name in out.column_names])
