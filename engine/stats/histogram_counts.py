"""Per-dimension latency histograms of raw records (the `latency_hourly` rows), counted in one pass.

Grouping the records once per dimension (six GROUP BYs over every row, twice with ttft) cost more
than the rest of a rollup recompute together. Here each record's dimension ids are numbered once
(Arrow dictionary encoding) and every (hour, id, metric, bucket) cell of a dimension is counted by a
`numpy.bincount` over as many hours at a time as keep the cells dense: no hashing per row and per
dimension. Ids are ranked by their text, so the rows come out in the order latency_hourly files keep
(hour, dim, id NULLS FIRST, metric, b), exactly the rows a GROUP BY would give.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.tables import HIST_SCHEMA

#: The dimensions in the order the files keep them (by name), and the column giving each one's id.
DIMENSIONS = (("gateway", None), ("key", "key_id"), ("master", "master_id"), ("model", "model"),
              ("provider", "provider_id"), ("provider_key", "provider_key_id"))
METRICS = ("latency", "ttft")   # by name, as the files sort them
#: Cells (hours x ids x metrics x buckets) counted at once by a dense bincount (8 MB of int64, cache-sized); a
#: dimension whose one hour has more goes through a sort instead.
DENSE_CELLS = 1_000_000
_HOUR_US = 3_600_000_000


def count(records: pa.Table) -> pa.Table:
    """The latency_hourly rows (HIST_SCHEMA) of records as latency_records.sql gives them.

    Args:
        records: columns hour, master_id, key_id, model, provider_id, provider_key_id, lb, tb
            (the latency and ttft buckets; tb null for a record without a ttft).
    """
    if records.num_rows == 0:
        return HIST_SCHEMA.empty_table()
    hour_us = records["hour"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    first_us = int(hour_us.min())
    hour_index = ((hour_us - first_us) // _HOUR_US).astype(np.int32)
    # Records of one hour together, so that each hour's are a slice (usually they already are).
    order = None if bool((np.diff(hour_index) >= 0).all()) else np.argsort(hour_index, kind="stable")

    def column(values: np.ndarray) -> np.ndarray:
        return values if order is None else values[order]

    hour_index = column(hour_index)
    tb_column = records["tb"].combine_chunks().cast(pa.int16())
    has_ttft = column(tb_column.is_valid().to_numpy(zero_copy_only=False))
    lb = column(records["lb"].to_numpy(zero_copy_only=False).astype(np.int32))
    tb = column(tb_column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32))
    low = int(min(lb.min(), tb[has_ttft].min() if has_ttft.any() else lb.min()))
    width = int(max(lb.max(), tb.max())) - low + 1
    timed = np.flatnonzero(has_ttft)          # the records with a ttft
    rows = _Rows(hour_index, lb - low, hour_index[timed], tb[timed] - low + width, timed)
    texts_of: list[pa.Array] = []
    by_dim: list[dict[int, tuple[np.ndarray, np.ndarray]]] = []
    for _, id_column in DIMENSIONS:
        codes, texts = (_ranked(records[id_column]) if id_column
                        else (np.zeros(len(lb), np.int32), pa.nulls(1, pa.string())))
        texts_of.append(texts)
        by_dim.append(rows.cells(column(codes), len(texts), width))
    # Hour by hour, dimension by dimension, each piece in (id, metric, bucket) order: the files' order.
    offsets = np.cumsum([0] + [len(t) for t in texts_of])[:-1]
    pieces = [(h, d, *by_dim[d][h]) for h in range(rows.hours) for d in range(len(DIMENSIONS)) if h in by_dim[d]]
    sizes = [len(p[2]) for p in pieces]
    cell = np.concatenate([p[2] for p in pieces]).astype(np.int64)
    dim = np.repeat(np.array([p[1] for p in pieces], np.int64), sizes)
    hour = np.repeat(np.array([first_us + p[0] * _HOUR_US for p in pieces], np.int64), sizes)
    return pa.table({
        "hour": pa.array(hour, pa.int64()).cast(HIST_SCHEMA.field("hour").type),
        "dim": pa.array([n for n, _ in DIMENSIONS]).take(pa.array(dim)),
        "id": pa.concat_arrays(texts_of).take(pa.array(offsets[dim] + cell // (2 * width))),
        "metric": pa.array(METRICS).take(pa.array(cell // width % 2)),
        "b": pa.array((cell % width + low).astype(np.int16)),
        "n": pa.array(np.concatenate([p[3] for p in pieces]).astype(np.int64)),
    }, schema=HIST_SCHEMA)


class _Rows:
    """The records sorted by hour, with their latency cells and (for those with one) ttft cells."""

    def __init__(self, hour: np.ndarray, latency: np.ndarray, ttft_hour: np.ndarray, ttft: np.ndarray,
                 timed: np.ndarray) -> None:
        self.hour, self.latency, self.ttft_hour, self.ttft, self.timed = hour, latency, ttft_hour, ttft, timed
        self.hours = int(hour[-1]) + 1
        self.bounds = np.searchsorted(hour, np.arange(self.hours + 1))
        self.ttft_bounds = np.searchsorted(ttft_hour, np.arange(self.hours + 1))

    def cells(self, codes: np.ndarray, ids: int, width: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per hour: the non-empty (id, metric, bucket) cells of one dimension (`codes`: each record's id
        rank), as id * 2 * width + metric * width + bucket, ascending, and their counts."""
        per_hour = ids * 2 * width
        dtype = np.dtype(np.int32 if max(DENSE_CELLS, per_hour) < 2**31 else np.int64)
        step = max(1, DENSE_CELLS // per_hour)   # as many hours at a time as keep the cells dense
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for first in range(0, self.hours, step):
            last = min(first + step, self.hours)
            lo, hi = int(self.bounds[first]), int(self.bounds[last])
            t_lo, t_hi = int(self.ttft_bounds[first]), int(self.ttft_bounds[last])
            if lo == hi:
                continue
            here = codes[lo:hi].astype(dtype) * (2 * width) + (self.hour[lo:hi] - first).astype(dtype) * per_hour
            there = (codes[self.timed[t_lo:t_hi]].astype(dtype) * (2 * width)
                     + (self.ttft_hour[t_lo:t_hi] - first).astype(dtype) * per_hour)
            cell, n = _cells(here + self.latency[lo:hi], there + self.ttft[t_lo:t_hi], (last - first) * per_hour)
            splits = np.searchsorted(cell, np.arange(1, last - first) * per_hour)
            for h, (part, counts) in enumerate(zip(np.split(cell, splits), np.split(n, splits), strict=True)):
                if len(part):
                    out[first + h] = (part - h * per_hour, counts)
        return out


def _ranked(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Each record's id numbered by its text's rank (nulls first), and the texts in rank order."""
    encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
    texts = encoded.dictionary.cast(pa.string())
    values = texts.to_pylist()
    order = sorted(range(len(values)), key=lambda i: (values[i] is not None, values[i] or ""))
    rank = np.empty(len(values), np.int32)
    rank[order] = np.arange(len(values), dtype=np.int32)
    return rank[encoded.indices.to_numpy(zero_copy_only=False)], texts.take(pa.array(order, pa.int64()))


def _cells(first: np.ndarray, second: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty cells among 0 .. size - 1, ascending, and how many codes of both arrays fell in each."""
    if size <= DENSE_CELLS:
        counts = np.bincount(first, minlength=size) + np.bincount(second, minlength=size)
        cell = np.flatnonzero(counts)
        return cell, counts[cell]
    return np.unique(np.concatenate([first, second]), return_counts=True)  # type: ignore[no-any-return]
