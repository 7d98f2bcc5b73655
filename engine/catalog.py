"""The DuckDB catalog: views over the lake's tables, the same ones analysts and queries read."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from engine import queries
from engine.objectlake import ObjectLake
from engine.tables import VIEWS, LakeTable


def connect(data_dir: Path, threads: int | None = None, objects: ObjectLake | None = None
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the shared macros and a view per lake table (`tables.VIEWS`).

    On object storage (`objects`) the connection reads the bucket through the storage layer, and each view
    reads the manifest's live files, listed when the view is (re)created: `register` again to see newer ones.
    """
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(queries.load(queries.DEFINITIONS).text)
    if objects is not None:
        objects.storage.attach(con)
    for table in VIEWS:
        register(con, table, data_dir, objects)
    return con


def register(con: duckdb.DuckDBPyConnection, table: LakeTable, data_dir: Path, objects: ObjectLake | None = None
             ) -> None:
    """(Re)create the view of one table; an empty table still has its columns and types."""
    # Binding the view opens a file for its schema; compaction or the cleaner may swap that file away
    # between listing and opening, so binding is retried like any query.
    queries.retrying(lambda: _bind(con, table, data_dir, objects))


def source(table: LakeTable, data_dir: Path, objects: ObjectLake | None = None) -> str | None:
    """The `read_parquet(...)` of a table's files (its glob, or the live list on object storage); None: no file."""
    options = f"hive_partitioning = true, hive_types = {{'{table.partition}': DATE}}"
    if objects is not None:
        urls = objects.urls(table.folder)
        if not urls:
            return None
        listed = ", ".join("'" + u.replace("'", "''") + "'" for u in urls)
        return f"read_parquet([{listed}], {options})"
    if not table.has_files(data_dir):
        return None
    return "read_parquet('" + table.glob(data_dir).replace("'", "''") + f"', {options})"


def _bind(con: duckdb.DuckDBPyConnection, table: LakeTable, data_dir: Path, objects: ObjectLake | None) -> None:
    read = source(table, data_dir, objects)
    if read is not None:
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM {read}")
    else:
        empty = table.schema.append(pa.field(table.partition, pa.date32())).empty_table()
        con.register(f"_{table.name}_empty", empty)
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM _{table.name}_empty")
