"""Analysts read the files as they are: the README's query gives one answer in DuckDB and Polars."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pyarrow as pa

from engine import Engine
from tests.conftest import make_record


def test_same_answer_from_the_view_raw_duckdb_and_polars(engine: Engine):
    base = dt.datetime(2026, 2, 27, 22, tzinfo=dt.UTC)
    records = [
        make_record(i, created_at=(base + dt.timedelta(minutes=17 * i)).isoformat(),
                    model=["gpt-4o", "claude-3-5-sonnet", "通义千问"][i % 3], status_code=[200, 429, 500, 200][i % 4])
        for i in range(300)
    ]
    engine.ingest_table(pa.Table.from_pylist(records))
    root = engine.settings.data_dir / "log_records"

    view = engine.sql(
        "SELECT date, model, count(*) AS requests, sum(is_error(status_code)::INT) AS errors "
        "FROM log_records GROUP BY ALL ORDER BY ALL"
    ).to_pylist()
    raw = duckdb.sql(
        f"SELECT date, model, count(*) AS requests, count(*) FILTER (status_code >= 400 AND status_code <> 429) AS errors "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    polars = (
        pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
        .group_by("date", "model")
        .agg(requests=pl.len(), errors=((pl.col("status_code") >= 400) & (pl.col("status_code") != 429)).sum())
        .sort("date", "model")
        .collect()
    )
    assert polars.schema["date"] == pl.Date
    as_tuples = [(r["date"], r["model"], r["requests"], r["errors"]) for r in view]
    assert as_tuples == [tuple(r) for r in raw] == list(polars.iter_rows())
    assert len({r[0] for r in as_tuples}) == 5  # five UTC days, across a month end
    assert sum(r[2] for r in as_tuples) == 300
