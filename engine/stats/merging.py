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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from engine.stats.histograms import HIST_COLUMNS, Group, Histograms, group_codes, placed
from engine.stats.topn import NULL, OTHER, Fold
from engine.tables import MAX_MEASURES, SUMMED_MEASURES

MISSING = np.iinfo(np.int64).min  # a maximum over no value (SQL NULL)
_MODEL_MEASURES = ("requests", "total_tokens")  # what top models list
_CELLS_PER_GROUP = 24  # a group's 17 figures, its key and its index entry, in 8-byte cells


@dataclass(frozen=True)
class Pairs:
    """The distinct (group row, id) pairs of a tally, for its distinct counts: each pair one int64 code, the
    row in the high 32 bits and the id's number (`ids`) in the low ones, kept sorted. A set of tuples cost
    ~100 bytes a pair, and an answer by hour over a month holds hundreds of thousands."""

    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ids: dict[int, int] = field(default_factory=dict)  # each id seen, numbered: len(ids) is the distinct total
    by_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # distinct ids per group row

    def add(self, rows: np.ndarray, column: pa.ChunkedArray, n: int) -> Pairs:
        """These pairs and those of a part's rows (`rows`: each row's group row, of `n`; NULL ids skipped)."""
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            rows, column = rows[valid], column.filter(column.is_valid())
        found, which = np.unique(column.to_numpy(), return_inverse=True)
        ids = self.ids
        if any(i not in ids for i in found.tolist()):
            ids = dict(ids)
            for i in found.tolist():
                ids.setdefault(i, len(ids))
        numbers = np.fromiter((ids[i] for i in found.tolist()), np.int64, len(found))
        fresh = np.unique((rows << 32) | numbers[which.reshape(-1)])
        at = np.searchsorted(self.codes, fresh)
        seen = at < len(self.codes)
        seen[seen] = self.codes[at[seen]] == fresh[seen]
        new = fresh[~seen]
        by_row = _grown(self.by_row, n, 0)
        np.add.at(by_row, new >> 32, 1)
        # Once a dashboard's groups are known a new file rarely adds a pair: the codes are then shared, not copied.
        codes = np.insert(self.codes, at[~seen], new) if len(new) else self.codes
        return Pairs(codes, ids, by_row)

    def fold(self, row_map: np.ndarray, n: int) -> Pairs:
        """The pairs once each group row `r` became `row_map[r]` (of `n`)."""
        codes = np.unique((row_map[self.codes >> 32] << 32) | (self.codes & 0xFFFFFFFF))
        return Pairs(codes, self.ids, np.bincount(codes >> 32, minlength=n).astype(np.int64))


@dataclass(frozen=True)
class Tally:
    """The SPEC metrics of stats_fine rows kept by (g1, g2) group, and the histograms of the answer's one
    dimension (None without). Immutable: `add` and `fold` return a new tally (a kept one serves several
    requests at once).

    The distinct counts are kept as the (group row, id) pairs seen (`Pairs`), so a part adds only the pairs
    that are new; a part's rows may be at any grain finer than the groups (stats_live_fine's are by bucket).
    """

    groups: list[Group] = field(default_factory=list)
    index: dict[Group, int] = field(default_factory=dict)
    sums: dict[str, np.ndarray] = field(default_factory=dict)    # int64 by group row
    maxes: dict[str, np.ndarray] = field(default_factory=dict)   # int64 by group row, MISSING for none
    masters: Pairs = field(default_factory=lambda: Pairs())      # (group row, master_id) pairs
    keys: Pairs = field(default_factory=lambda: Pairs())         # (group row, key_id) pairs
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
        """What keeping it costs, in 8-byte cells (the unit of Histograms.num_rows): a (group, id) pair one, a
        group about a dozen."""
        cells = _CELLS_PER_GROUP * len(self.groups) + len(self.masters.codes) + len(self.keys.codes)
        return cells + (self.hist.num_rows if self.hist else 0)

    def add(self, table: pa.Table) -> Tally:
        """This tally and stats_fine (or stats_live_fine) rows. With a bucket column `b` that is not all NULL
        (stats_live_fine with $buckets), the rows' requests by bucket are added to the histograms too."""
        if table.num_rows == 0:
            return self
        codes, found = group_codes(table)
        groups, index, row_of = placed(found, self.groups, self.index)
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
        models, model_sums = self._models_added(table)
        hist = self.hist
        if "b" in table.column_names and table["b"].null_count < table.num_rows:
            counts = table.select(["g1", "g2", "b", "requests"]).rename_columns(list(HIST_COLUMNS))
            counts = counts.filter(table["b"].is_valid()) if table["b"].null_count else counts
            hist = Histograms.of(counts) if hist is None else hist.add_rows(counts)
        return Tally(groups, index, sums, maxes, self.masters.add(rows, table["master_id"], n),
                     self.keys.add(rows, table["key_id"], n), models, model_sums, hist)

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
        hist = self.hist
        if hist is not None:
            hist = _folded(hist, fold) if hist.counts is not None and hist.groups else \
                Histograms.of(fold.table(hist.rows()))
        return Tally(groups, index, sums, maxes, self.masters.fold(row_map, n), self.keys.fold(row_map, n),
                     self.models, self.model_sums, hist)

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
        rows = [{**blank, **total, "masters": len(self.masters.ids), "keys": len(self.keys.ids)}]
        if grouped:
            if check is not None:
                check(self.group_table())
            columns = {name: values.tolist() for name, values in self.sums.items()}
            columns |= {name: [_maximum(v) for v in values.tolist()] for name, values in self.maxes.items()}
            columns["masters"] = self.masters.by_row.tolist()
            columns["keys"] = self.keys.by_row.tolist()
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


def _maximum(value: int) -> int | None:
    return None if value == MISSING else value


def _relabelled(groups: list[Group], fold: Fold) -> tuple[list[Group], dict[Group, int], np.ndarray]:
    """The groups once `fold` relabelled those it does not keep as OTHER, and each old group's new row."""
    at = 0 if fold.column == "g1" else 1

    def relabel(group: Group) -> Group:
        value = group[at]
        if (NULL if value is None else value) in fold.keep:
            return group
        return (OTHER, group[1]) if at == 0 else (group[0], OTHER)

    return placed([relabel(g) for g in groups], [], {})


def _folded(hist: Histograms, fold: Fold) -> Histograms:
    """A histogram matrix with the rows of the groups `fold` does not keep added into OTHER's."""
    assert hist.counts is not None and hist.groups is not None
    groups, _, row_map = _relabelled(hist.groups, fold)
    counts = np.zeros((len(groups), hist.counts.shape[1]), np.int64)
    np.add.at(counts, row_map, hist.counts)
    return Histograms(hist.table, groups, counts)
