"""Text and transfer encodings at ingest: invalid UTF-8 refused in every format (naming row and field), string
lengths bounded, gzip and zstd bodies decompressed under the body limit (issue 10, "Found" 1 and 7)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fastapi.testclient import TestClient

from api.app import create_app
from cli import app as cli_app
from engine import Engine, Settings
from engine.schema import FIELD_BY_NAME
from tests.conftest import make_record

NDJSON = {"content-type": "application/x-ndjson"}
ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
BAD = b"\xff\xfe"  # never valid UTF-8


def count(engine: Engine) -> int:
    return engine.sql("SELECT count(*) FROM log_records").column(0)[0].as_py()


def with_bad_model(records: list[dict], row: int) -> list[dict]:
    """Records whose `row` (0-based) has a model holding BAD; the placeholder is replaced in the bytes."""
    return [dict(r, model="PLACEHOLDER") if i == row else r for i, r in enumerate(records)]


def bad_ndjson(n: int, row: int) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in with_bad_model([make_record(i) for i in range(n)], row)
                      ).replace(b"PLACEHOLDER", b"gpt" + BAD)


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def bad_table(n: int, row: int) -> pa.Table:
    """A table whose `model` column is a string column holding BAD at `row` (binary bytes viewed as string)."""
    table = pa.Table.from_pylist([make_record(i) for i in range(n)])
    models = [b"gpt" + BAD if i == row else b"gpt-4o" for i in range(n)]
    column = pa.array(models, pa.binary()).view(pa.string())
    return table.set_column(table.schema.get_field_index("model"), "model", column)


def only_error(problem: dict) -> tuple[int, str | None]:
    assert problem["error_count"] == 1, problem
    error = problem["errors"][0]
    assert "UTF-8" in error["reason"]
    return error["row"], error["field"]


def test_invalid_utf8_is_refused_over_http_naming_row_and_field(client: TestClient, engine: Engine):
    r = client.post("/v1/logs", content=bad_ndjson(5, 3), headers=NDJSON)
    assert r.status_code == 422 and only_error(r.json()) == (4, "model")
    array = bad_ndjson(4, 1).replace(b"\n", b",")
    r = client.post("/v1/logs", content=b"[" + array + b"]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and only_error(r.json()) == (2, "model")
    r = client.post("/v1/logs", content=arrow_stream(bad_table(6, 5)), headers=ARROW)
    assert r.status_code == 422 and only_error(r.json()) == (6, "model")
    assert count(engine) == 0
    # The day stays readable: stats, SQL and the rollups job all work.
    assert client.post("/v1/logs", content=json.dumps(make_record(9)).encode(), headers=NDJSON).status_code == 201
    assert client.get("/admin/stats", params={"period": "custom", "from": "2026-01-01", "to": "2026-01-01"}
                      ).json()["totals"]["requests"] == 1
    assert engine.jobs.run("rollups").outcome == "ok"


def test_invalid_utf8_is_refused_in_every_file_format(tmp_path: Path, engine: Engine):
    files = {
        "a.ndjson": bad_ndjson(3, 2),
        "b.json": b"[" + bad_ndjson(3, 0).replace(b"\n", b",") + b"]",
        "c.csv": ("request_id,created_at,master_id,key_id,model,status_code,latency_ms,prompt_tokens,"
                  "completion_tokens\n" + "\n".join(f"r{i},2026-01-01T00:00:0{i}Z,1,1,PLACEHOLDER,200,5,1,1"
                                                    for i in range(3))).encode().replace(b"PLACEHOLDER", BAD, 2),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    pq.write_table(bad_table(4, 1), tmp_path / "d.parquet")
    (tmp_path / "e.arrow").write_bytes(arrow_stream(bad_table(2, 0)))
    expected = {"a.ndjson": (3, "model"), "b.json": (1, "model"), "c.csv": (1, "model"), "d.parquet": (2, "model"),
                "e.arrow": (1, "model")}
    from engine.errors import InvalidBatch

    for name, (row, field) in expected.items():
        with pytest.raises(InvalidBatch) as caught:
            engine.ingest_file(tmp_path / name)
        first = caught.value.errors[0]
        assert (first.row, first.field) == (row, field) and "UTF-8" in first.reason, (name, first)
    assert count(engine) == 0


def test_strings_over_their_maximum_length_are_refused_and_error_messages_cut(client: TestClient, engine: Engine):
    long_model = make_record(0, model="m" * 201)
    r = client.post("/v1/logs", content=json.dumps(long_model).encode(), headers=NDJSON)
    assert r.status_code == 422
    assert (r.json()["errors"][0]["field"], r.json()["errors"][0]["reason"]) == (
        "model", "is longer than 200 characters")
    a_megabyte = make_record(1, model="x" * 1_000_000)
    assert client.post("/v1/logs", content=json.dumps(a_megabyte).encode(), headers=NDJSON).status_code == 422
    # Characters, not bytes: 200 CJK characters (600 bytes) fit.
    assert client.post("/v1/logs", content=json.dumps(make_record(2, model="模" * 200)).encode(),
                       headers=NDJSON).status_code == 201
    limit = FIELD_BY_NAME["error_message"].max_length
    body = "\n".join(json.dumps(make_record(10 + i, error_message="é" * n)) for i, n in
                     enumerate((limit, limit + 1, 50_000))).encode()
    r = client.post("/v1/logs", content=body, headers=NDJSON)
    assert r.status_code == 201 and r.json()["truncated"] == 2 and r.json()["records"] == 3
    lengths = engine.sql("SELECT length(error_message) AS n FROM log_records WHERE error_message IS NOT NULL")
    assert lengths.column("n").to_pylist() == [limit] * 3
    assert client.post("/v1/logs", content=body, headers=NDJSON).json()["truncated"] == 2  # the replay says so too


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "x-gzip", "identity"])
def test_gzip_and_zstd_bodies_are_decompressed(client: TestClient, engine: Engine, encoding):
    plain = "\n".join(json.dumps(make_record(i)) for i in range(20)).encode()
    data = {"gzip": gzip.compress, "x-gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress,
            "identity": lambda b: b}[encoding](plain)
    r = client.post("/v1/logs", content=data, headers={**NDJSON, "content-encoding": encoding})
    assert r.status_code == 201 and r.json()["records"] == 20
    # The batch id is the hash of the decompressed body: the same records sent plain are the same batch.
    again = client.post("/v1/logs", content=plain, headers=NDJSON)
    assert again.headers.get("idempotent-replayed") == "true"
    assert count(engine) == 20


def test_an_arrow_stream_can_be_compressed_too(client: TestClient, engine: Engine):
    body = zstandard.ZstdCompressor().compress(arrow_stream(pa.Table.from_pylist([make_record(i) for i in range(7)])))
    r = client.post("/v1/logs", content=body, headers={**ARROW, "content-encoding": "zstd"})
    assert r.status_code == 201 and count(engine) == 7


def test_other_encodings_answer_415_and_broken_ones_400(client: TestClient, engine: Engine):
    plain = json.dumps(make_record(0)).encode()
    for encoding in ("br", "deflate", "compress", "gzip, br"):
        r = client.post("/v1/logs", content=plain, headers={**NDJSON, "content-encoding": encoding})
        assert r.status_code == 415 and r.json()["type"] == "/problems/unsupported-media-type", encoding
    for encoding, data in (("gzip", plain), ("gzip", gzip.compress(plain)[:-6]), ("zstd", plain),
                           ("zstd", zstandard.ZstdCompressor().compress(plain)[:-3])):
        r = client.post("/v1/logs", content=data, headers={**NDJSON, "content-encoding": encoding})
        assert r.status_code == 400 and r.json()["type"] == "/problems/malformed-body", (encoding, r.text)
    assert count(engine) == 0


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_decompression_bomb_answers_413(tmp_path: Path, encoding):
    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False, max_body_bytes=1_000_000))
    client = TestClient(create_app(engine=engine))
    bomb = b"\n" * 200_000_000  # 200 MB of blank lines in a body of a few hundred KB
    data = gzip.compress(bomb, 9) if encoding == "gzip" else zstandard.ZstdCompressor(level=19).compress(bomb)
    assert len(data) < 1_000_000
    r = client.post("/v1/logs", content=data, headers={**NDJSON, "content-encoding": encoding})
    assert r.status_code == 413 and r.json()["type"] == "/problems/payload-too-large"
    assert "decompressed" in r.json()["detail"]


def test_compressed_files_are_ingested_by_the_cli(tmp_path: Path, cli_env, engine: Engine):
    from typer.testing import CliRunner

    plain = "\n".join(json.dumps(make_record(i)) for i in range(4)).encode()
    (tmp_path / "a.ndjson.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "b.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "\n".join(json.dumps(make_record(10 + i)) for i in range(3)).encode()))
    result = CliRunner().invoke(cli_app, ["ingest", str(tmp_path / "a.ndjson.gz"), str(tmp_path / "b.ndjson.zst")])
    assert result.exit_code == 0, result.stderr
    assert count(engine) == 7
