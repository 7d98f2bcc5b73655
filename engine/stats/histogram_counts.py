"""Per-dimension latency histograms of raw records (the `latency_hourly` rows), counted in one pass.

Grouping the records once per dimension (six GROUP BYs over every row, twice with ttft) cost more
than the rest of a rollup recompute together. Here each record's dimension ids are numbered once
(Arrow dictionary encoding) and, hour by hour, every (id, metric, bucket) cell of a dimension is a
`numpy.bincount`: no hashing per row and per dimension, no sort. Ids are ranked by their text, so the
rows come out in the order latency_hourly files keep (hour, dim, id NULLS FIRST, metric, b), exactly
the rows a GROUP BY would give.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.tables import HIST_SCHEMA

#: The dimensions in the order the files keep them (by name), and the column giving each one's id.
DIMENSIONS = (("gateway", None), ("key", "key_id"), ("master", "master_id"), ("model", "model"),
              ("provider", "provider_id"), ("provider_key", "provider_key_id"))
METRICS = ("latency", "ttft")   # by name, as the files sort them
#: Cells (ids x metrics x buckets) of one hour and dimension up to which counts go through a dense
#: bincount (32 MB of int64); above, through a sort.
DENSE_CELLS = 4_000_000
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
    lb -= low
    tb -= low
    ids = []
    for _, id_column in DIMENSIONS:
        codes, texts = (_ranked(records[id_column]) if id_column
                        else (np.zeros(len(lb), np.int32), pa.nulls(1, pa.string())))
        # Cell numbers past int32 (a dimension of millions of ids) need 64 bits.
        ids.append((column(codes).astype(np.int64) if len(texts) * 2 * width >= 2**31 else column(codes), texts))
    # One dictionary of every dimension's id texts: a row's id is one take from it.
    offsets = np.cumsum([0] + [len(texts) for _, texts in ids])
    dictionary = pa.concat_arrays([texts for _, texts in ids])

    bounds = np.searchsorted(hour_index, np.arange(int(hour_index[-1]) + 2))
    pieces: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    for h in range(len(bounds) - 1):
        rows = slice(int(bounds[h]), int(bounds[h + 1]))
        if rows.start == rows.stop:
            continue
        ttft = has_ttft[rows]
        lat_b, ttft_b = lb[rows], tb[rows][ttft]
        for number, (codes, texts) in enumerate(ids):
            here = codes[rows] * (2 * width)
            cell, n = _cells(np.concatenate([here + lat_b, here[ttft] + width + ttft_b]), len(texts) * 2 * width)
            pieces.append((h, number, cell, n))

    cells = np.concatenate([p[2] for p in pieces]).astype(np.int64)
    sizes = [len(p[2]) for p in pieces]
    hour = np.repeat(np.array([first_us + p[0] * _HOUR_US for p in pieces], np.int64), sizes)
    dim = np.repeat(np.array([p[1] for p in pieces], np.int32), sizes)
    return pa.table({
        "hour": pa.array(hour, pa.int64()).cast(HIST_SCHEMA.field("hour").type),
        "dim": pa.array([n for n, _ in DIMENSIONS]).take(pa.array(dim)),
        "id": dictionary.take(pa.array(offsets[dim] + cells // (2 * width))),
        "metric": pa.array(METRICS).take(pa.array(cells // width % 2)),
        "b": pa.array((cells % width + low).astype(np.int16)),
        "n": pa.array(np.concatenate([p[3] for p in pieces]).astype(np.int64)),
    }, schema=HIST_SCHEMA)


def _ranked(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Each record's id numbered by its text's rank (nulls first), and the texts in rank order."""
    encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
    texts = encoded.dictionary.cast(pa.string())
    values = texts.to_pylist()
    order = sorted(range(len(values)), key=lambda i: (values[i] is not None, values[i] or ""))
    rank = np.empty(len(values), np.int32)
    rank[order] = np.arange(len(values), dtype=np.int32)
    return rank[encoded.indices.to_numpy(zero_copy_only=False)], texts.take(pa.array(order, pa.int64()))


def _cells(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty cells among 0 .. size - 1, ascending, and how many codes fell in each."""
    if size <= DENSE_CELLS:
        counts = np.bincount(codes, minlength=size)
        cell = np.flatnonzero(counts)
        return cell, counts[cell]
    return np.unique(codes, return_counts=True)  # type: ignore[no-any-return]
