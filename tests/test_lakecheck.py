"""A lake that already holds a bad file keeps serving: readers name the file and the repair command,
`ezstats lake check` finds it, `--repair` quarantines it and recomputes what it fed (issue 10, "Found" 1)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli import app
from engine import Engine, Settings
from engine.errors import LakeDamaged
from engine.lake import write_parquet
from engine.validation import validate
from tests.conftest import make_record

DAY = dt.date(2026, 1, 1)
NOW = dt.datetime(2026, 1, 3, 12, tzinfo=dt.UTC)
runner = CliRunner()


def records(first: int, n: int, hour: int) -> list[dict]:
    return [make_record(i, created_at=f"{DAY}T{hour:02d}:{i % 60:02d}:00Z") for i in range(first, first + n)]


def ndjson(recs: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in recs).encode()


@pytest.fixture
def lake(tmp_path: Path) -> Engine:
    """Three batches of a closed, summarized day (hours 10, 11, 12), then a batch as ezstats 0.1.0 stored it:
    a model of bytes that are not UTF-8, in hour 11, through the real writer and ledger (validation skipped)."""
    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False), clock=lambda: NOW)
    for k, hour in enumerate((10, 11, 12)):
        engine.ingest_body(ndjson(records(100 * k, 20, hour)), "application/x-ndjson")
    engine.jobs.run("rollups")
    engine.jobs.run("daily_stats")
    table = validate(pa.Table.from_pylist(records(900, 5, 11)))
    models = pa.array([b"gpt\xff\xfe"] * 5, pa.binary()).view(pa.string())
    receipt = engine.lake.write(table.set_column(table.schema.get_field_index("model"), table.schema.field("model"),
                                                 models), "legacy")
    (name,) = receipt.files
    Path(engine.settings.data_dir / name).rename(engine.settings.data_dir / "log_records" / f"date={DAY}" / BAD)
    with engine.store.connect() as con:  # keep the ledger naming the file as it is now called
        con.execute("UPDATE ingest_batches SET files = replace(files, ?, ?) WHERE batch_id = 'legacy'",
                    (Path(name).name, BAD))
    assert engine.jobs.run("rollups").outcome == "failed"  # as on main: every reader of the day fails
    return engine


BAD = "part-legacy-bad.parquet"


def custom_day(client: TestClient) -> dict:
    return client.get("/admin/stats", params={"period": "custom", "from": str(DAY), "to": str(DAY),
                                              "source": "raw"}).json()


def test_a_reader_meeting_a_bad_file_names_it_and_the_repair_command(lake: Engine):
    client = TestClient(create_app(engine=lake), raise_server_exceptions=False)
    r = client.get("/admin/stats", params={"period": "custom", "from": str(DAY), "to": str(DAY), "source": "raw"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/lake-damaged"
    assert "part-legacy-bad.parquet" in r.json()["detail"] and "ezstats lake check --repair" in r.json()["detail"]
    with pytest.raises(LakeDamaged, match=r"part-legacy-bad\.parquet"):
        lake.sql("SELECT max(model) FROM log_records")


def test_lake_check_finds_the_file_and_repair_quarantines_it(lake: Engine, cli_env, monkeypatch):
    monkeypatch.setenv("EZ_DATA_DIR", str(lake.settings.data_dir))
    checked = runner.invoke(app, ["lake", "check", "--json"])
    assert checked.exit_code == 1
    report = json.loads(checked.stdout)
    assert [(p["path"], p["action"]) for p in report["problems"]] == [
        (f"log_records/date={DAY}/part-legacy-bad.parquet", "reported")]
    assert "UTF-8" in report["problems"][0]["problem"]
    assert report["mismatches"] == []
    assert (lake.settings.data_dir / f"log_records/date={DAY}/part-legacy-bad.parquet").exists()

    repaired = runner.invoke(app, ["lake", "check", "--repair", "--json"])
    report = json.loads(repaired.stdout)
    assert repaired.exit_code == 0, repaired.stdout
    assert report["ok"] and report["problems"][0]["action"] == "quarantined"
    (moved,) = report["quarantined"]
    assert moved["quarantined_as"] == f"_quarantine/log_records/date={DAY}/part-legacy-bad.parquet"
    assert moved["rows"] == 5 and moved["hours"] == [f"{DAY}T11:00:00Z"]
    assert report["recomputed_hours"] == 1
    assert (lake.settings.data_dir / moved["quarantined_as"]).exists()
    assert runner.invoke(app, ["lake", "check"]).exit_code == 0

    engine = Engine(lake.settings, clock=lambda: NOW)
    assert engine.jobs.run("rollups").outcome == "ok"
    client = TestClient(create_app(engine=engine))
    raw, auto = custom_day(client), client.get("/admin/stats", params={"period": "custom", "from": str(DAY),
                                                                       "to": str(DAY)}).json()
    assert raw["totals"]["requests"] == auto["totals"]["requests"] == 60  # the rollups were recomputed
    assert auto["sources"]["lost_hours"] == [f"{DAY}T11:00:00Z"]
    assert client.get("/admin/stats/daily", params={"from": str(DAY), "to": str(DAY)}).json()["days"][0][
        "requests"] == 60
    # The rows are no longer indexed: the gateway may send them again.
    again = client.post("/v1/logs", content=ndjson(records(900, 5, 11)),
                        headers={"content-type": "application/x-ndjson"})
    assert again.status_code == 201 and again.json()["records"] == 5


def test_a_truncated_file_and_a_damaged_rollup_are_repaired(lake: Engine):
    lake.check_lake(repair=True)
    assert lake.jobs.run("rollups").outcome == "ok"
    good = next((lake.settings.data_dir / f"log_records/date={DAY}").glob("*.parquet"))
    rows_lost = pq.read_metadata(good).num_rows
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    rollup = lake.settings.data_dir / f"rollups_hourly/date={DAY}/part.parquet"
    rollup.write_bytes(b"PAR1 not really")
    report = lake.check_lake(repair=False)
    assert {p.table for p in report.problems} == {"log_records", "rollups_hourly"}
    assert all(p.action == "reported" for p in report.problems) and not report.ok
    report = lake.check_lake(repair=True)
    assert report.ok, report.model_dump_json(indent=1)
    assert {q.table for q in report.quarantined} == {"log_records", "rollups_hourly"}
    truncated = next(q for q in report.quarantined if q.table == "log_records")
    assert truncated.rows == rows_lost and len(truncated.hours) == 1  # its footer is gone: the ledger says
    totals = lake.stats.read("custom", DAY, DAY).totals
    assert totals.requests == 60 - rows_lost
    assert lake.check_lake().ok


def test_files_the_ledger_does_not_know_are_a_count_mismatch(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=lambda: NOW)
    engine.ingest_body(ndjson(records(0, 10, 9)), "application/x-ndjson")
    table = validate(pa.Table.from_pylist(records(50, 3, 9)))
    write_parquet(table, tmp_path / "log_records" / f"date={DAY}" / "part-by-hand.parquet", 1000)
    report = engine.check_lake(repair=True)
    assert not report.ok and report.problems == []
    assert [(m.day, m.files, m.ledger) for m in report.mismatches] == [(DAY, 13, 10)]


def test_repair_leaves_a_clean_lake_alone(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False), clock=lambda: NOW)
    engine.ingest_body(ndjson(records(0, 10, 9)), "application/x-ndjson")
    engine.jobs.run("rollups")
    report = engine.check_lake(repair=True)
    assert report.ok and report.problems == [] and report.quarantined == [] and report.files_checked >= 3
    assert report.rows_checked >= 10


def test_compaction_does_not_merge_a_bad_file_into_good_ones(lake: Engine):
    folder = lake.settings.data_dir / f"log_records/date={DAY}"
    before = sorted(p.name for p in folder.glob("*.parquet"))
    run = lake.jobs.run("compaction")
    (skipped,) = run.details["partitions"]
    assert BAD in skipped["skipped"] and "ezstats lake check --repair" in skipped["skipped"]
    assert sorted(p.name for p in folder.glob("*.parquet")) == before
    lake.check_lake(repair=True)
    lake.jobs.run("compaction")
    assert len(list(folder.glob("*.parquet"))) == 1
    assert lake.sql("SELECT count(*) FROM log_records").column(0)[0].as_py() == 60
