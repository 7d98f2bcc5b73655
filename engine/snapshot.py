"""A consistent way in for analysts: the live files of a table at one moment, and statements that read them.

On object storage a raw glob of the bucket is not the table: during a compaction's grace period it sees the
small files and the file merged from them (rows counted twice), after a crashed upload an object no batch
committed, and after the cleaner's drop a day that is gone. The manifest is the table; a snapshot is the
list of its live files when taken, which stays readable whole for EZ_LAKE_GRACE_SECONDS after any later
compaction or drop replaces them. On a local lake the same list is taken from the folders (a glob there is
consistent too; see `engine.partitions`).
"""

from __future__ import annotations

import datetime as dt
import json
import os

from pydantic import BaseModel, Field

from engine.errors import InvalidParameter
from engine.infra import Infra
from engine.tables import VIEWS, LakeTable


class Snapshot(BaseModel):
    """The live files of one lake table, and the same read in DuckDB, Polars and Spark."""

    table: str
    lake_url: str = Field(description="The lake: a local folder, or s3://bucket/prefix.")
    taken_at: dt.datetime
    readable_until: dt.datetime = Field(description="The files stay in place at least until then, even if a "
                                        "compaction or the log cleaner replaces them meanwhile.")
    files: list[str] = Field(description="Every live Parquet file (s3:// URLs or local paths); `date` is in the path.")
    rows: int
    duckdb: str = Field(description="A DuckDB query over exactly these files.")
    polars: str = Field(description="The same scan in Polars.")
    spark: str = Field(description="The same read in PySpark (s3a:// with hadoop-aws on S3).")


def take(infra: Infra, name: str = "log_records") -> Snapshot:
    """The live files of table `name` now, with statements reading exactly them.

    Raises:
        InvalidParameter: no lake table has that name.
    """
    table = _table(name)
    now = infra.now()
    objects = infra.lake.objects
    if objects is not None:
        live = objects.manifest.live(table.folder)
        files, rows = [objects.storage.path(f.path) for f in live], sum(f.rows for f in live)
    else:
        import pyarrow.parquet as pq

        files = sorted(str(p) for p in table.root(infra.data_dir).glob(f"{table.partition}=*/*.parquet"))
        rows = sum(pq.read_metadata(p).num_rows for p in files)
    until = now + dt.timedelta(seconds=infra.settings.lake_grace_seconds)
    return Snapshot(table=table.name, lake_url=infra.settings.lake_url or str(infra.data_dir), taken_at=now,
                    readable_until=until, files=files, rows=rows, duckdb=_duckdb(table, files, infra),
                    polars=_polars(table, files, infra), spark=_spark(table, files))


def _table(name: str) -> LakeTable:
    for table in VIEWS:
        if table.name == name:
            return table
    raise InvalidParameter(f"unknown lake table {name!r}; use one of {', '.join(t.name for t in VIEWS)}")


def _list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _duckdb(table: LakeTable, files: list[str], infra: Infra) -> str:
    if not files:
        return f"-- {table.name} has no file yet"
    read = f"read_parquet({_list(files)}, hive_partitioning = true, hive_types = {{'{table.partition}': DATE}})"
    if infra.lake.objects is None:
        return f"SELECT * FROM {read}"
    endpoint = infra.settings.s3_endpoint_url
    secret = ""
    if endpoint:  # for the DuckDB CLI with httpfs; in Python, con.register_filesystem(s3fs.S3FileSystem(...))
        host = endpoint.split("://", 1)[-1]
        secret = (f"CREATE OR REPLACE SECRET lake (TYPE s3, KEY_ID getenv('AWS_ACCESS_KEY_ID'), SECRET "
                  f"getenv('AWS_SECRET_ACCESS_KEY'), ENDPOINT '{host}', URL_STYLE 'path', "
                  f"USE_SSL {str(endpoint.startswith('https')).lower()});\n")
    return f"{secret}SELECT * FROM {read}"


def _polars(table: LakeTable, files: list[str], infra: Infra) -> str:
    options = ""
    if infra.lake.objects is not None:
        storage = {"aws_access_key_id": "$AWS_ACCESS_KEY_ID", "aws_secret_access_key": "$AWS_SECRET_ACCESS_KEY"}
        if infra.settings.s3_endpoint_url:
            storage["aws_endpoint_url"] = infra.settings.s3_endpoint_url
            if infra.settings.s3_endpoint_url.startswith("http://"):
                storage["aws_allow_http"] = "true"
        if os.environ.get("AWS_REGION"):
            storage["aws_region"] = os.environ["AWS_REGION"]
        shown = json.dumps(storage).replace('"$AWS_ACCESS_KEY_ID"', 'os.environ["AWS_ACCESS_KEY_ID"]').replace(
            '"$AWS_SECRET_ACCESS_KEY"', 'os.environ["AWS_SECRET_ACCESS_KEY"]')
        options = f", storage_options={shown}"
    return f"pl.scan_parquet({json.dumps(files)}, hive_partitioning=True{options})"


def _spark(table: LakeTable, files: list[str]) -> str:
    paths = [f.replace("s3://", "s3a://", 1) for f in files]
    base = paths[0].split(f"/{table.partition}=", 1)[0] if paths else ""
    return (f'spark.read.option("basePath", {json.dumps(base)}).parquet(*{json.dumps(paths)})'
            f'.createOrReplaceTempView("{table.name}")')


def write_manifest(snapshot: Snapshot, path: str) -> None:
    """Write the snapshot as JSON, whole (temporary name, then rename), for tools that read a file list."""
    temp = f"{path}.tmp"
    with open(temp, "w") as out:
        out.write(snapshot.model_dump_json(indent=2))
    os.replace(temp, path)
