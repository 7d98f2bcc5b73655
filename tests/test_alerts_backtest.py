"""Backtest: the preview equals what `alerts detect` stores when replayed minute by minute, and touches nothing."""

from __future__ import annotations

import datetime as dt
import random
import time

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from engine import Engine, Settings
from engine.alerts.backtest import Counts
from engine.alerts.thresholds import Thresholds
from tests.alert_traffic import Clock, minutes

START = dt.datetime(2026, 3, 9, 23, 0, tzinfo=dt.UTC)
END = dt.datetime(2026, 3, 10, 1, 0, tzinfo=dt.UTC)


def incidents_traffic(seed: int = 3) -> pa.Table:
    """Two hours across midnight: steady traffic with an error burst, a 429 storm, a provider outage, a spike."""
    rng = random.Random(seed)
    rows = []
    moment = START - minutes(30)
    while moment < END + minutes(10):
        minute = int((moment - START) / minutes(1))
        for _ in range(rng.randint(20, 40) + (120 if 100 <= minute < 106 else 0)):
            key = rng.randint(1, 6)
            master = 1 + (key - 1) // 2 if not 100 <= minute < 106 else 1
            pkey = rng.choice([None, 1, 2, 3])
            status = 200 if rng.random() > 0.04 else 500
            if key == 2 and 20 <= minute < 35 and rng.random() < 0.4:
                status = 502
            if master == 3 and 50 <= minute < 70 and rng.random() < 0.5:
                status, pkey = 429, None
            if pkey == 3 and 80 <= minute < 90 and rng.random() < 0.8:
                status = 503
            rows.append({"request_id": f"b{len(rows)}", "created_at": moment + dt.timedelta(seconds=rng.uniform(0, 60)),
                         "master_id": master, "key_id": key, "model": "m", "provider_key_id": pkey,
                         "status_code": status, "latency_ms": 5, "prompt_tokens": rng.randint(0, 500),
                         "completion_tokens": rng.randint(0, 500)})
        moment += minutes(1)
    # Early on the first day, long before the replay starts: only the day-so-far sums can see it.
    early = START.replace(hour=2)
    rows += [{"request_id": f"e{i}", "created_at": early + dt.timedelta(seconds=6 * i), "master_id": 2, "key_id": 3,
              "model": "m", "status_code": 200, "latency_ms": 5, "prompt_tokens": 1, "completion_tokens": 1}
             for i in range(350)]
    return pa.Table.from_pylist(rows)


CANDIDATE = {
    "recovery_evaluations": 2,
    "error_spike": {"min_samples": 10},
    "provider_down": {"min_samples": 5},
    "traffic_spike": {"global_qps": 2.0, "master_rpm": 60, "master_tpm": 40_000, "master_rpd": 400,
                      "master_tpd": 10**9, "min_samples": 10},
}


def summary(alerts) -> list[tuple]:
    return sorted((a.fingerprint, a.opened_at, a.resolved_at, a.resolution, a.severity, a.peak_severity,
                   round(a.peak_value, 9), a.status, a.samples, round(a.value, 9)) for a in alerts)


@pytest.mark.slow
def test_preview_equals_replaying_detect_minute_by_minute(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path), clock=Clock(END + minutes(30)))
    engine.ingest_table(incidents_traffic())
    candidate = Thresholds.parse(CANDIDATE)
    # Through the job path: queued, run by the worker thread, the result read back from the store.
    run = engine.alerts.previews.submit(candidate, START, END)
    run = wait(engine, run.id)
    assert run.status == "done" and run.progress == 1.0 and run.minutes_done == run.minutes_total == 120
    preview = run.result
    assert engine.alerts.list_alerts().alerts == []            # the preview stored nothing

    engine.alerts.update_thresholds(candidate, None)
    moment = START
    while moment < END:
        engine.alerts.run_once(moment)
        moment += minutes(1)
    stored = engine.alerts.history.all()
    assert preview.evaluations == 120
    assert {a.type for a in stored} >= {"error_spike", "rate_limit", "provider_down", "traffic_spike"}
    assert any(a.period == "2026-03-09" for a in stored) and any(a.period == "2026-03-10" for a in stored)
    assert any(a.status == "resolved" and a.resolution.startswith("recovered") for a in stored)
    assert summary(preview.alerts) == summary(stored)


def wait(engine, run_id, seconds=120.0):
    """The preview run once it has finished."""
    deadline = time.monotonic() + seconds
    run = engine.alerts.preview_run(run_id)
    while run.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        run = engine.alerts.preview_run(run_id)
    return run


def test_preview_api_and_cli_over_whole_days(tmp_path, monkeypatch):
    engine = Engine(Settings(data_dir=tmp_path), clock=Clock(END + minutes(30)))
    engine.ingest_table(incidents_traffic())
    client = TestClient(create_app(engine=engine))
    body = {"from": "2026-03-09", "to": "2026-03-10", "thresholds": Thresholds.parse(CANDIDATE).model_dump()}
    r = client.post("/admin/alerts/thresholds/preview", json=body)
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["status"] in ("queued", "running", "done") and 0 <= run["progress"] <= 1
    assert r.headers["location"] == f"/admin/alerts/thresholds/preview/{run['id']}"
    deadline = time.monotonic() + 120
    while run["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        polled = client.get(r.headers["location"])
        assert polled.status_code == 200
        run = polled.json()
    assert run["status"] == "done" and run["progress"] == 1.0 and run["minutes_done"] == 1440 + 90
    out = run["result"]
    # Two days, but the replay stops at the clock's now (01:30 on the 10th).
    assert (out["start"], out["end"], out["evaluations"]) == (
        "2026-03-09T00:00:00Z", "2026-03-10T01:30:00Z", 1440 + 90)
    assert out["opened"] == len(out["alerts"]) > 0 and out["by_type"]["error_spike"] >= 1
    assert client.get("/admin/alerts").json()["alerts"] == []
    assert engine.alerts.read_thresholds().version == 1          # the candidate was not stored

    # A replay up to now stops mid-minute: that minute is evaluated too, as `alerts detect` at it would be.
    assert engine.alerts.replay(Thresholds.parse(CANDIDATE), START, END + dt.timedelta(seconds=20)).evaluations == 121
    assert client.get("/admin/alerts/thresholds/preview/999").status_code == 404
    bad = client.post("/admin/alerts/thresholds/preview", json={**body, "to": "2026-03-01"})
    assert bad.status_code == 422 and "after" in bad.json()["detail"]
    long = client.post("/admin/alerts/thresholds/preview", json={**body, "from": "2026-01-01"})
    assert long.status_code == 422
    invalid = client.post("/admin/alerts/thresholds/preview", json={**body, "thresholds": {"recovery_ratio": 3}})
    assert invalid.status_code == 422

    from cli import app
    from engine.settings import get_settings

    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    candidate = tmp_path / "candidate.json"
    candidate.write_text(Thresholds.parse(CANDIDATE).model_dump_json())
    # The CLI's engine runs on the real clock: the days are long past, so they replay whole.
    result = CliRunner().invoke(app, ["alerts", "preview", "--from", "2026-03-10", "--to", "2026-03-10",
                                      "--thresholds", str(candidate), "--json"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert '"evaluations": 1440' in result.stdout


def test_window_sums_match_direct_sums():
    rng = random.Random(1)
    data = {b: {s: (rng.randint(0, 5), rng.randint(0, 5)) for s in (3, 8, 20) if rng.random() < 0.7}
            for b in range(50)}
    ids = [3, 8, 20]
    dense = np.zeros((2, 51, 3), np.int64)
    for b, scopes in data.items():
        for s, (x, y) in scopes.items():
            dense[0, b + 1, ids.index(s)], dense[1, b + 1, ids.index(s)] = x, y
    counts = Counts(ids, dense[0].cumsum(axis=0), dense[1].cumsum(axis=0), {})
    ends = np.arange(3, 50, 2)
    for width in (1, 7, 60):
        first, second = counts.window(ends, width)
        for row, end in enumerate(ends):
            for col, s in enumerate(ids):
                expected = [data.get(b, {}).get(s, (0, 0)) for b in range(max(0, end - width), end)]
                assert (first[row, col], second[row, col]) == (sum(x for x, _ in expected), sum(y for _, y in expected))
