"""The stats routes through the real app: shapes, ETag/304, 422 problems, auth."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from engine import Engine, Settings
from tests.stats_oracle import check, expected, frame
from tests.stats_records import NOW, records


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("api"), admin_token=SecretStr("s3cret")),
                    clock=lambda: NOW)
    table = records(3000, 11, NOW - dt.timedelta(days=10), NOW)
    engine.ingest_table(table)
    engine.stats.run_daily(NOW)
    client = TestClient(create_app(engine=engine), headers={"Authorization": "Bearer s3cret"})
    return client, frame(table)


def test_stats_answers_the_spec_metrics_with_start_and_end(served):
    client, df = served
    r = client.get("/admin/stats", params={"period": "last7d", "group_by": "model"})
    assert r.status_code == 200, r.text
    body = r.json()
    start, end = dt.datetime.fromisoformat(body["start"]), dt.datetime.fromisoformat(body["end"])
    assert (start, end) == (dt.datetime(2026, 3, 12, tzinfo=dt.UTC), NOW)
    want = expected(df, start, end, "model")
    for g in body["groups"]:
        check(g, want[g["group"]], body["percentiles"] == "exact")
    assert body["percentiles"] in ("exact", "approx")
    assert body["top_models"][0]["requests"] >= body["top_models"][-1]["requests"]


def test_filters_and_id_groups_are_typed(served):
    client, df = served
    body = client.get("/admin/stats", params={"period": "last30d", "master_id": 2, "group_by": "key"}).json()
    assert all(isinstance(g["group"], int) for g in body["groups"])
    assert body["filters"] == {"master_id": 2}
    want = expected(df, dt.datetime.fromisoformat(body["start"]), NOW, master_id=2)[None]
    check(body["totals"], want, body["percentiles"] == "exact")


def test_etag_and_if_none_match(served):
    client, _ = served
    params = {"period": "custom", "from": "2026-03-10", "to": "2026-03-12"}
    first = client.get("/admin/stats", params=params)
    tag = first.headers["etag"]
    assert tag.startswith('"') and not tag.startswith("W/")
    assert "max-age" in first.headers["cache-control"]  # closed days
    again = client.get("/admin/stats", params=params, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    other = client.get("/admin/stats", params=params, headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.headers["etag"] == tag
    today = client.get("/admin/stats", params={"period": "today"})
    assert today.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path,params,word", [
    ("/admin/stats", {"period": "fortnight"}, "period"),
    ("/admin/stats", {"period": "custom"}, "custom"),
    ("/admin/stats", {"period": "custom", "from": "2026-03-10"}, "custom"),
    ("/admin/stats", {"period": "custom", "from": "2026-03-12", "to": "2026-03-10"}, "after"),
    ("/admin/stats", {"period": "custom", "from": "yesterday", "to": "2026-03-10"}, "from"),
    ("/admin/stats", {"period": "today", "group_by": "country"}, "group_by"),
    ("/admin/stats", {"period": "today", "from": "2026-03-10"}, "custom"),
    ("/admin/stats", {"period": "today", "master_id": "x"}, "master_id"),
    ("/admin/stats/series", {"interval": "week"}, "interval"),
    ("/admin/stats/series", {"metric": "vibes"}, "metric"),
    ("/admin/stats/daily", {"from": "2026-03-12", "to": "2026-03-10"}, "after"),
])
def test_bad_parameters_are_422_problems(served, path, params, word):
    client, _ = served
    r = client.get(path, params=params)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert word in r.json()["detail"]


def test_admin_token_is_required(served):
    client, _ = served
    r = client.get("/admin/stats", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_daily_rows_are_the_closed_days(served):
    client, df = served
    body = client.get("/admin/stats/daily", params={"from": "2026-03-08", "to": "2026-03-20"}).json()
    days = [d["date"] for d in body["days"]]
    assert days == [f"2026-03-{d:02d}" for d in range(8, 18)]
    for row in body["days"]:
        day = dt.date.fromisoformat(row["date"])
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        want = expected(df, start, start + dt.timedelta(days=1))[None]
        assert row["requests"] == want["requests"] and row["total_tokens"] == want["total_tokens"]
        assert row["grain"] == "gateway" and row["late_data"] is False
    one = client.get("/admin/stats/daily", params={"from": "2026-03-10", "to": "2026-03-10", "master_id": 3}).json()
    assert [d["master_id"] for d in one["days"]] == [3]
    start = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    assert one["days"][0]["requests"] == expected(df, start, start + dt.timedelta(days=1), master_id=3)[None][
        "requests"]


def test_series_is_flat_rows_for_grafana(served):
    client, df = served
    body = client.get("/admin/stats/series", params={"period": "last7d", "interval": "day",
                                                     "metric": "errors"}).json()
    want = expected(df, dt.datetime.fromisoformat(body["start"]), NOW, "day")
    assert body["rows"] == [{"time": f"{d}T00:00:00Z", "errors": want[d]["errors"]} for d in sorted(want)]
