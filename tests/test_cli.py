"""The real `ezstats` CLI: ingest of every file format, ad-hoc SQL, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from cli import app
from engine import Engine
from tests.conftest import make_record

runner = CliRunner()


def write_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "ndjson": folder / "a.ndjson",
        "json": folder / "b.json",
        "csv": folder / "c.csv",
        "parquet": folder / "d.parquet",
    }
    paths["ndjson"].write_text("\n".join(json.dumps(make_record(i)) for i in range(5)))
    paths["json"].write_text(json.dumps([make_record(10 + i) for i in range(3)]))
    pl.DataFrame([make_record(20 + i, is_stream=i % 2 == 0) for i in range(4)]).write_csv(paths["csv"])
    pq.write_table(pa.Table.from_pylist([make_record(30 + i, created_at=1767225600000 + i) for i in range(2)]),
                   paths["parquet"])
    return paths


def test_ingest_every_format_then_query(tmp_path: Path, cli_env, engine: Engine):
    paths = write_inputs(tmp_path / "in")
    result = runner.invoke(app, ["ingest", *map(str, paths.values()), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["records"] for r in report] == [5, 3, 4, 2]
    again = runner.invoke(app, ["ingest", str(paths["csv"]), "--json"])
    assert json.loads(again.stdout)[0]["replayed"] is True
    out = runner.invoke(app, ["sql", "SELECT count(*) AS n, sum(is_stream::INT) AS s FROM log_records", "-f", "json"])
    assert out.exit_code == 0
    assert json.loads(out.stdout) == {"n": 14, "s": 5 + 3 + 2 + 2}


def test_a_bad_file_is_refused_whole_and_exits_1(tmp_path: Path, cli_env, engine: Engine):
    good = tmp_path / "good.ndjson"
    good.write_text(json.dumps(make_record(1)))
    bad = tmp_path / "bad.csv"
    pl.DataFrame([make_record(2), make_record(3, status_code=1000)]).write_csv(bad)
    result = runner.invoke(app, ["ingest", str(good), str(bad)])
    assert result.exit_code == 1
    assert "row 2, field 'status_code'" in result.stderr
    assert engine.sql("SELECT request_id FROM log_records").column(0).to_pylist() == ["req-1"]


def test_sql_formats_and_errors(tmp_path: Path, cli_env, engine: Engine):
    engine.ingest_table(pa.Table.from_pylist([make_record(i, model="通义千问") for i in range(3)]))
    csv = runner.invoke(app, ["sql", "SELECT model, count(*) AS n FROM log_records GROUP BY 1", "--format", "csv"])
    assert csv.stdout.splitlines() == ['"model","n"', '"通义千问",3']
    table = runner.invoke(app, ["sql", "SELECT count(*) AS requests FROM log_records"])
    assert "requests" in table.stdout and "3" in table.stdout
    out = tmp_path / "x.parquet"
    runner.invoke(app, ["sql", "SELECT * FROM log_records", "-f", "parquet", "-o", str(out)])
    assert pq.read_table(out).num_rows == 3
    bad = runner.invoke(app, ["sql", "SELEC nope"])
    assert bad.exit_code == 1 and "error" in bad.stderr


def test_unsupported_file_type_exits_1(tmp_path: Path, cli_env, engine: Engine):
    odd = tmp_path / "x.xml"
    odd.write_text("<x/>")
    result = runner.invoke(app, ["ingest", str(odd)])
    assert result.exit_code == 1 and "unsupported file type" in result.stderr
