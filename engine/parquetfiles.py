"""How the lake encodes a Parquet file: one set of options, to a local path (fsync-ed) or to bytes (uploads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_NO_DICTIONARY = frozenset(
    {"request_id", "created_at", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "quota_cost"}
)


def _options(table: pa.Table, row_group_rows: int) -> dict[str, Any]:
    return {
        "compression": "zstd",
        "row_group_size": row_group_rows,
        # Dictionaries only where values repeat: on ids and measures they cost time and grow files.
        "use_dictionary": [name for name in table.column_names if name not in _NO_DICTIONARY],
        "write_statistics": True,
        "sorting_columns": [pq.SortingColumn(table.schema.get_field_index("created_at"))]
        if "created_at" in table.schema.names else None,
    }


def write_parquet(table: pa.Table, path: Path, row_group_rows: int) -> None:
    """Write one lake file (zstd, row groups sized for parallel scans, min/max statistics) and fsync it."""
    pq.write_table(table, path, **_options(table, row_group_rows))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parquet_bytes(table: pa.Table, row_group_rows: int) -> bytes:
    """The same file as `write_parquet`, in memory: what an upload to object storage sends whole."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **_options(table, row_group_rows))
    return bytes(sink.getvalue())
