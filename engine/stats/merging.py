"""Merging partial aggregates in memory: the rollup part of an answer and its raw part, file by file.

The parts are small Arrow tables (thousands of rows) that DuckDB already computed from the lake. Merging
them is a sum, a max and two distinct counts per group, per model and in total; DuckDB spends ~15 ms
planning and scheduling such a query whatever its size. An answer's parts are therefore kept as a `Tally`:
its figures by group, with the (group, id) pairs its distinct counts need, and its one dimension's
histograms. A new lake file's rows are added to it with numpy, where regrouping both parts on every live
request with Arrow cost ~8 ms at 500 groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from engine.stats.histograms import HIST_COLUMNS, Group, Histograms, group_codes
from engine.stats.topn import NULL, OTHER, Fold
from engine.tables import MAX_MEASURES, SUMMED_MEASURES

MISSING = np.iinfo(np.int64).min  # a maximum over no value (SQL NULL)
_MODEL_MEASURES = ("requests", "total_tokens")  # what top models list


@dataclass(frozen=True)
class Tally:
    """The SPEC metrics of stats_fine rows kept by (g1, g2) group, and the histograms of the answer's one
    dimension (None without). Immutable: `add` and `fold` return a new tally (a kept one serves several
    requests at once).

    The distinct counts are kept as the (group row, id) pairs seen, so a part adds only the pairs that are
    new; a part's rows may be at any grain finer than the groups (stats_live_fine's are also by bucket).
    """

    groups: list[Group] = field(default_factory=list)
    index: dict[Group, int] = field(default_factory=dict)
    sums: dict[str, np.ndarray] = field(default_factory=dict)    # int64 by group row
    maxes: dict[str, np.ndarray] = field(default_factory=dict)   # int64 by group row, MISSING for none
    masters: frozenset[tuple[int, int]] = frozenset()            # (group row, master_id) pairs
    keys: frozenset[tuple[int, int]] = frozenset()               # (group row, key_id) pairs
    masters_n: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # distinct masters by group row
    keys_n: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    all_masters: frozenset[int] = frozenset()
    all_keys: frozenset[int] = frozenset()
    models: dict[str | None, int] = field(default_factory=dict)   # model -> its row in model_sums
    model_sums: np.ndarray = field(default_factory=lambda: np.zeros((0, len(_MODEL_MEASURES)), np.int64))
    hist: Histograms | None = None

    @classmethod
    def of(cls, table: pa.Table) -> Tally:
        """The tally of stats_fine rows (the rollup part of an answer)."""
        return cls().add(table)

    def with_hist(self, hist: Histograms) -> Tally:
        """This tally with the histograms of its rows (the rollup part's stats_hist)."""
        return dataclasses.replace(self, hist=hist)

    @property
    def num_rows(self) -> int:
        """What keeping it costs, in rows or matrix cells (see Histograms.num_rows)."""
        return len(self.groups) + len(self.masters) + len(self.keys) + (self.hist.num_rows if self.hist else 0)

    def add(self, table: pa.Table) -> Tally:
        """This tally and stats_fine (or stats_live_fine) rows. With a bucket column `b` that is not all NULL
        (stats_live_fine with $buckets), the rows' requests by bucket are added to the histograms too."""
        if table.num_rows == 0:
            return self
        codes, found = group_codes(table)
        groups, index = list(self.groups), dict(self.index)
        row_of = np.empty(len(found), np.int64)
        for j, group in enumerate(found):
            row = index.get(group)
            if row is None:
                row = index[group] = len(groups)
                groups.append(group)
            row_of[j] = row
        rows = row_of[codes]
        n = len(groups)
        sums, maxes = {}, {}
        for name in SUMMED_MEASURES:
            if name in table.column_names or name in self.sums:
                sums[name] = _grown(self.sums.get(name), n, 0)
                if name in table.column_names:
                    np.add.at(sums[name], rows, _ints(table[name], 0))
        for name in MAX_MEASURES:
            if name in table.column_names or name in self.maxes:
                maxes[name] = _grown(self.maxes.get(name), n, MISSING)
                if name in table.column_names:
                    np.maximum.at(maxes[name], rows, _ints(table[name], MISSING))
        row_list = rows.tolist()
        new_masters = _pairs(row_list, table["master_id"]) - self.masters
        new_keys = _pairs(row_list, table["key_id"]) - self.keys
        models, model_sums = self._models_added(table)
        hist = self.hist
        if "b" in table.column_names and table["b"].null_count < table.num_rows:
            counts = table.select(["g1", "g2", "b", "requests"]).rename_columns(list(HIST_COLUMNS))
            fresh = Histograms.of(counts.filter(table["b"].is_valid()) if table["b"].null_count else counts)
            hist = fresh if hist is None else hist.add(fresh)
        # Once a dashboard's groups are known a new file rarely adds a pair: the sets are then shared, not copied.
        return Tally(groups, index, sums, maxes, self.masters | new_masters if new_masters else self.masters,
                     self.keys | new_keys if new_keys else self.keys,
                     _counted(self.masters_n, new_masters, n), _counted(self.keys_n, new_keys, n),
                     self.all_masters | {m for _, m in new_masters} if new_masters else self.all_masters,
                     self.all_keys | {k for _, k in new_keys} if new_keys else self.all_keys,
                     models, model_sums, hist)

    def _models_added(self, table: pa.Table) -> tuple[dict[str | None, int], np.ndarray]:
        encoded = table["model"].combine_chunks().dictionary_encode(null_encoding="encode")
        models = dict(self.models)
        row_of = np.array([models.setdefault(m, len(models)) for m in encoded.dictionary.to_pylist()], np.int64)
        sums = np.zeros((len(models), len(_MODEL_MEASURES)), np.int64)
        sums[: len(self.model_sums)] = self.model_sums
        rows = row_of[encoded.indices.to_numpy(zero_copy_only=False)]
        for i, name in enumerate(_MODEL_MEASURES):
            if name in table.column_names:
                np.add.at(sums[:, i], rows, _ints(table[name], 0))
        return models, sums

    def fold(self, fold: Fold) -> Tally:
        """This tally with the groups `fold` does not keep merged into one OTHER group (see topn.Fold)."""
        groups, index, row_map = _relabelled(self.groups, fold)
        n = len(groups)
        sums = {}
        for name, values in self.sums.items():
            sums[name] = np.zeros(n, np.int64)
            np.add.at(sums[name], row_map, values)
        maxes = {}
        for name, values in self.maxes.items():
            maxes[name] = np.full(n, MISSING, np.int64)
            np.maximum.at(maxes[name], row_map, values)
        mapped = row_map.tolist()
        masters = frozenset((mapped[r], m) for r, m in self.masters)
        keys = frozenset((mapped[r], k) for r, k in self.keys)
        hist = self.hist
        if hist is not None:
            hist = _folded(hist, fold) if hist.counts is not None and hist.groups else \
                Histograms.of(fold.table(hist.rows()))
        return Tally(groups, index, sums, maxes, masters, keys, _counted(None, masters, n), _counted(None, keys, n),
                     self.all_masters, self.all_keys, self.models, self.model_sums, hist)

    def group_table(self) -> pa.Table:
        """The (g1, g2) groups, as a table (what `rows`'s check sees)."""
        return pa.table({"g1": pa.array([g[0] for g in self.groups], pa.string()),
                         "g2": pa.array([g[1] for g in self.groups], pa.string())})

    def rows(self, grouped: bool, check: Callable[[pa.Table], None] | None = None) -> list[dict[str, Any]]:
        """The SPEC metrics: the total, each (g1, g2) group if `grouped`, each model.

        Rows: {kind: 'total' | 'group' | 'model', g1, g2, model, the measures, masters, keys}; model rows
        carry requests and total_tokens (what top models list). `check` sees the groups (an Arrow table with
        g1 and g2) before they become Python rows, and may raise to refuse an answer too big to build.
        """
        if not self.groups:
            return []
        blank = {"kind": "total", "g1": None, "g2": None, "model": None}
        total: dict[str, Any] = {name: int(values.sum()) for name, values in self.sums.items()}
        total |= {name: _maximum(int(values.max())) for name, values in self.maxes.items()}
        rows = [{**blank, **total, "masters": len(self.all_masters), "keys": len(self.all_keys)}]
        if grouped:
            if check is not None:
                check(self.group_table())
            columns = {name: values.tolist() for name, values in self.sums.items()}
            columns |= {name: [_maximum(v) for v in values.tolist()] for name, values in self.maxes.items()}
            columns["masters"] = self.masters_n.tolist()
            columns["keys"] = self.keys_n.tolist()
            names = list(columns)
            for (g1, g2), values in zip(self.groups, zip(*columns.values(), strict=True), strict=True):
                rows.append({"kind": "group", "g1": g1, "g2": g2, "model": None,
                             **dict(zip(names, values, strict=True))})
        for model, i in self.models.items():
            figures = self.model_sums[i].tolist()
            rows.append({"kind": "model", "g1": None, "g2": None, "model": model,
                         **dict(zip(_MODEL_MEASURES, figures, strict=True))})
        return rows


def _grown(values: np.ndarray | None, n: int, fill: int) -> np.ndarray:
    """A copy of `values` (or nothing) extended to `n` rows with `fill`."""
    out = np.full(n, fill, np.int64)
    if values is not None:
        out[: len(values)] = values
    return out


def _ints(column: pa.ChunkedArray, fill: int) -> np.ndarray:
    """A measure column as int64, NULL as `fill` (0 for a sum, MISSING for a max)."""
    if column.null_count:
        return column.cast(pa.int64()).fill_null(fill).to_numpy()
    return column.to_numpy().astype(np.int64, copy=False)


def _pairs(rows: list[int], ids: pa.ChunkedArray) -> set[tuple[int, int]]:
    """The (group row, id) pairs of a part's rows."""
    return {(r, i) for r, i in zip(rows, ids.to_pylist(), strict=True) if i is not None}


def _maximum(value: int) -> int | None:
    return None if value == MISSING else value


def _counted(counts: np.ndarray | None, new: Iterable[tuple[int, int]], n: int) -> np.ndarray:
    """Distinct ids by group row: `counts` (extended to `n` rows) plus the new (row, id) pairs."""
    out = _grown(counts, n, 0)
    np.add.at(out, np.fromiter((r for r, _ in new), np.int64), 1)
    return out


def _relabelled(groups: list[Group], fold: Fold) -> tuple[list[Group], dict[Group, int], np.ndarray]:
    """The groups once `fold` relabelled those it does not keep as OTHER, and each old group's new row."""
    at = 0 if fold.column == "g1" else 1
    out: list[Group] = []
    index: dict[Group, int] = {}
    row_map = np.empty(len(groups), np.int64)
    for i, group in enumerate(groups):
        value = group[at]
        if (NULL if value is None else value) not in fold.keep:
            group = (OTHER, group[1]) if at == 0 else (group[0], OTHER)
        row = index.get(group)
        if row is None:
            row = index[group] = len(out)
            out.append(group)
        row_map[i] = row
    return out, index, row_map


def _folded(hist: Histograms, fold: Fold) -> Histograms:
    """A histogram matrix with the rows of the groups `fold` does not keep added into OTHER's."""
    assert hist.counts is not None and hist.groups is not None
    groups, _, row_map = _relabelled(hist.groups, fold)
    counts = np.zeros((len(groups), hist.counts.shape[1]), np.int64)
    np.add.at(counts, row_map, hist.counts)
    return Histograms(hist.table, groups, counts)
