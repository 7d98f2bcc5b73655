"""The storage layer on a real S3 server (SeaweedFS): conditional PUT, listing, and DuckDB reading through it."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest

from engine import catalog
from engine.errors import ConfigurationError
from engine.parquetfiles import parquet_bytes
from engine.storage import LocalStorage, S3Storage, open_storage
from tests.seaweedfs import S3Server

pytestmark = pytest.mark.scale


def test_lake_url_names_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage(None, tmp_path, None), LocalStorage)
    s3 = open_storage("s3://lake/some/prefix/", tmp_path, "http://127.0.0.1:1")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("lake", "some/prefix")
    assert s3.path("log_records/date=2026-01-01/a.parquet") == "s3://lake/some/prefix/log_records/date=2026-01-01/a.parquet"
    with pytest.raises(ConfigurationError):
        open_storage("s3:///nobucket", tmp_path, None)
    with pytest.raises(ConfigurationError):
        open_storage("gs://other", tmp_path, None)


def test_conditional_put_has_one_winner_among_racing_writers(s3: S3Server, tmp_path: Path) -> None:
    for storage in (open_storage(s3.lake_url(), tmp_path, s3.endpoint), LocalStorage(tmp_path / "local")):
        with ThreadPoolExecutor(16) as pool:
            won = list(pool.map(lambda i, st=storage: st.put("x/one", f"writer {i}".encode(), if_absent=True),
                                range(16)))
        assert won.count(True) == 1
        assert storage.get("x/one") == f"writer {won.index(True)}".encode()
        assert storage.list("x") == ["x/one"]
        storage.delete(["x/one"])
        assert storage.list("x") == []


def test_duckdb_reads_the_bucket_through_the_storage_layer(s3: S3Server, tmp_path: Path) -> None:
    storage = open_storage(s3.lake_url(), tmp_path, s3.endpoint)
    for day in range(1, 4):
        table = pa.table({"n": pa.array(range(day * 10), pa.int64())})
        storage.put(f"t/date=2026-01-0{day}/part.parquet", parquet_bytes(table, 1000), if_absent=True)
    con = catalog.connect(tmp_path, objects=None)
    storage.attach(con)
    glob = storage.path("t/*/*.parquet")
    rows = con.execute(f"SELECT date, count(*) FROM read_parquet('{glob}', hive_partitioning = true, "
                       "hive_types = {'date': DATE}) GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == [(dt.date(2026, 1, d), d * 10) for d in range(1, 4)]
