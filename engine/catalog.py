"""The DuckDB catalog: views over the lake's tables, the same ones analysts and queries read."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from engine import queries
from engine.tables import VIEWS, LakeTable


def connect(data_dir: Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the shared macros and a view per lake table (`tables.VIEWS`)."""
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(queries.load(queries.DEFINITIONS).text)
    for table in VIEWS:
        register(con, table, data_dir)
    return con


def register(con: duckdb.DuckDBPyConnection, table: LakeTable, data_dir: Path) -> None:
    """(Re)create the view of one table; an empty table still has its columns and types."""
    # Binding the view opens a file for its schema; compaction or the cleaner may swap that file away
    # between listing and opening, so binding is retried like any query.
    queries.retrying(lambda: _bind(con, table, data_dir))


def _bind(con: duckdb.DuckDBPyConnection, table: LakeTable, data_dir: Path) -> None:
    if table.has_files(data_dir):
        path = table.glob(data_dir).replace("'", "''")
        con.execute(
            f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM read_parquet('{path}', "
            f"hive_partitioning = true, hive_types = {{'{table.partition}': DATE}})"
        )
    else:
        empty = table.schema.append(pa.field(table.partition, pa.date32())).empty_table()
        con.register(f"_{table.name}_empty", empty)
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM _{table.name}_empty")
