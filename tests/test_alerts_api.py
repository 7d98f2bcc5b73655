"""/admin/alerts through the real app: filters, cursor pages, one alert with events, ack, resolve, stats."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from tests.alert_traffic import NOW, Clock, minutes, requests, set_thresholds, store
from tests.conftest import ON_BOTH


@pytest.fixture
def engine(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path), clock=Clock(NOW + minutes(10)))
    set_thresholds(engine, traffic_spike={"master_rpm": 40})
    # Keys 1..5 of master 1 and keys 6..7 of master 2 erring at 20 %.
    for key in range(1, 8):
        master = 1 if key <= 5 else 2
        store(engine, requests(NOW, 5, 80, key_id=key, master_id=master, provider_key_id=key),
              requests(NOW, 5, 20, key_id=key, master_id=master, status=500, provider_key_id=key))
    engine.alerts.run_once(NOW)
    return engine


@pytest.fixture
def client(engine):
    return TestClient(create_app(engine=engine))


def test_list_filters(client):
    everything = client.get("/admin/alerts").json()["alerts"]
    # 7 erring keys, and both masters at or over 40 RPM (100 and exactly 40).
    assert sorted((a["type"], a["scope_id"]) for a in everything) == [
        *(("error_spike", k) for k in range(1, 8)), ("traffic_spike", 1), ("traffic_spike", 2)]
    errors = client.get("/admin/alerts", params={"type": "error_spike"}).json()["alerts"]
    assert sorted(a["key_id"] for a in errors) == list(range(1, 8))
    assert [a["key_id"] for a in client.get("/admin/alerts", params={"key_id": 6}).json()["alerts"]] == [6]
    by_master = client.get("/admin/alerts", params={"master_id": 2}).json()["alerts"]
    assert sorted((a["type"], a["key_id"]) for a in by_master) == [
        ("error_spike", 6), ("error_spike", 7), ("traffic_spike", None)]
    assert client.get("/admin/alerts", params={"status": "resolved"}).json()["alerts"] == []
    assert client.get("/admin/alerts", params={"since": "2026-03-10T12:00:01Z"}).json()["alerts"] == []
    assert len(client.get("/admin/alerts", params={"until": "2026-03-10T12:00:01Z"}).json()["alerts"]) == 9


@pytest.mark.parametrize("params", [{"type": "nope"}, {"severity": "fatal"}, {"status": "closed"}, {"limit": 0},
                                    {"limit": 501}, {"since": "yesterday"}, {"cursor": "garbage"},
                                    {"since": "2026-03-11T00:00:00Z", "until": "2026-03-10T00:00:00Z"}])
def test_bad_filters_are_422_problems(client, params):
    r = client.get("/admin/alerts", params=params)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


@ON_BOTH  # also on the PostgreSQL control store
def test_cursor_pagination_visits_each_alert_once(client):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = client.get("/admin/alerts", params=params).json()
        seen += [a["id"] for a in body["alerts"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 9 and pages == 3


@ON_BOTH  # also on the PostgreSQL control store
def test_get_ack_resolve_and_history(client, engine):
    alert_id = client.get("/admin/alerts", params={"key_id": 3}).json()["alerts"][0]["id"]
    r = client.post(f"/admin/alerts/{alert_id}/ack", json={"by": "ana", "note": "on it",
                                                           "expires_at": "2026-03-10T13:00:00Z"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert r.json()["ack_expires_at"] == "2026-03-10T13:00:00Z"
    assert client.get("/admin/alerts", params={"status": "acknowledged"}).json()["alerts"][0]["id"] == alert_id
    r = client.post(f"/admin/alerts/{alert_id}/resolve", json={"by": "bo", "note": "fixed"})
    assert r.status_code == 200 and r.json()["status"] == "resolved" and r.json()["resolution"] == "fixed"
    one = client.get(f"/admin/alerts/{alert_id}").json()
    assert [(e["kind"], e["actor"], e["note"]) for e in one["events"][1:]] == [
        ("acknowledged", "ana", "on it"), ("resolved", "bo", "fixed")]
    again = client.post(f"/admin/alerts/{alert_id}/resolve")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert client.post(f"/admin/alerts/{alert_id}/ack").status_code == 409


def test_ack_validation_and_missing(client):
    alert_id = client.get("/admin/alerts").json()["alerts"][0]["id"]
    assert client.post(f"/admin/alerts/{alert_id}/ack", json={"expires_at": "2020-01-01T00:00:00Z"}).status_code == 422
    assert client.post(f"/admin/alerts/{alert_id}/ack", json={"colour": "red"}).status_code == 422
    missing = client.get("/admin/alerts/9999")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert client.post("/admin/alerts/9999/resolve").status_code == 404


def test_stats_counts(client, engine):
    first = client.get("/admin/alerts", params={"type": "error_spike"}).json()["alerts"][0]["id"]
    client.post(f"/admin/alerts/{first}/resolve")
    stats = client.get("/admin/alerts/stats").json()
    everything = client.get("/admin/alerts").json()["alerts"]
    assert stats["total"] == len(everything) == 9
    for field, column in (("by_type", "type"), ("by_severity", "peak_severity"), ("by_status", "status")):
        expected = {}
        for a in everything:
            expected[a[column]] = expected.get(a[column], 0) + 1
        assert {k: v for k, v in stats[field].items() if v} == expected
    assert stats["by_status"]["resolved"] == 1 and stats["by_type"]["provider_down"] == 0
    assert (stats["start"], stats["end"]) == ("2026-03-09T12:10:00Z", "2026-03-10T12:10:00Z")
    empty = client.get("/admin/alerts/stats", params={"since": "2026-03-11T00:00:00Z",
                                                      "until": "2026-03-12T00:00:00Z"}).json()
    assert empty["total"] == 0
