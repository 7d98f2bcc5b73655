"""What a dashboard builds on: strict parameters, CORS, top-N with an exact `other`, registry names, every
daily grain, tz on every stats route, docs served offline, the documented ingest body."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from tests.stats_oracle import check, expected, frame
from tests.stats_records import NOW, records

NAMES = {"masters": {1: "Acme", 2: "Globex"}, "keys": {3: "acme-prod", 7: "globex-batch"},
         "providers": {1: "OpenAI main"}, "provider_keys": {10: "openai-key-a"}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("dash"), scheduler_enabled=False), clock=lambda: NOW)
    table = records(4000, 17, NOW - dt.timedelta(days=8), NOW)
    engine.ingest_table(table)
    engine.stats.run_daily(NOW)
    engine.registry.sync({
        "masters": [{"master_id": i, "name": n} for i, n in NAMES["masters"].items()],
        "keys": [{"key_id": i, "master_id": 1, "name": n} for i, n in NAMES["keys"].items()],
        "providers": [{"provider_id": 1, "name": "OpenAI main"}],
        "provider_keys": [{"provider_key_id": 10, "provider_id": 1, "name": "openai-key-a"}],
    })
    return TestClient(create_app(engine=engine)), frame(table)


# -- strict parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "params", "unknown"), [
    ("/admin/stats", {"period": "today", "grup_by": "model"}, "grup_by"),
    ("/admin/stats/series", {"timezone": "Asia/Shanghai"}, "timezone"),
    ("/admin/stats/daily", {"day": "2026-03-10"}, "day"),
    ("/admin/alerts", {"sevrity": "critical"}, "sevrity"),
    ("/admin/alerts/stats", {"zone": "UTC"}, "zone"),
    ("/admin/jobs", {"x": "1"}, "x"),
    ("/healthz", {"verbose": "1"}, "verbose"),
])
def test_an_unknown_query_parameter_is_a_422_naming_it(served, path, params, unknown):
    client, _ = served
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert unknown in r.json()["detail"] and "unknown query parameter" in r.json()["detail"]


def test_declared_parameters_and_aliases_pass(served):
    client, _ = served
    r = client.get("/admin/stats", params={"period": "custom", "from": "2026-03-10", "to": "2026-03-11",
                                           "tz": "UTC", "group_by": "key", "limit": 3, "sort": "-errors",
                                           "other": "true"})
    assert r.status_code == 200, r.text


# -- CORS -----------------------------------------------------------------------------------------

def _preflight(client: TestClient, origin: str) -> object:
    return client.options("/admin/stats", headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "authorization"})


def test_no_cross_origin_access_by_default(served):
    client, _ = served
    r = _preflight(client, "https://dash.example.com")
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    plain = client.get("/healthz", headers={"Origin": "https://dash.example.com"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allows_the_configured_origins_only(tmp_path):
    settings = Settings(data_dir=tmp_path, scheduler_enabled=False, cors_origins="https://dash.example.com, "
                        "http://localhost:3000/")
    with TestClient(create_app(settings)) as client:
        ok = _preflight(client, "https://dash.example.com")
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://dash.example.com"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert _preflight(client, "http://localhost:3000").status_code == 200
        refused = _preflight(client, "https://evil.example.com")
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        got = client.get("/healthz", headers={"Origin": "https://dash.example.com"})
        assert got.headers["access-control-allow-origin"] == "https://dash.example.com"


def test_a_wildcard_never_allows_credentials(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, scheduler_enabled=False, cors_origins="*"))) as client:
        r = _preflight(client, "https://anywhere.example.org")
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers
        got = client.get("/healthz", headers={"Origin": "https://anywhere.example.org", "Cookie": "a=b"})
        assert got.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in got.headers


# -- top-N ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("group_by", "sort"), [("key", "-errors"), ("model", "latency_p95"),
                                                ("provider_key", "-error_rate"), ("master", "-keys")])
def test_limit_keeps_totals_and_other_sums_the_rest(served, group_by, sort):
    client, df = served
    params = {"period": "last7d", "group_by": group_by}
    full = client.get("/admin/stats", params=params).json()
    top = client.get("/admin/stats", params={**params, "limit": 2, "sort": sort, "other": "true"}).json()
    assert top["totals"] == full["totals"]  # totals do not depend on the limit
    assert top["groups_total"] == len(full["groups"]) and len(top["groups"]) == 2
    metric, descending = sort.removeprefix("-"), sort.startswith("-")

    def value(g):
        return g["latency_ms"][metric.removeprefix("latency_")] if metric.startswith("latency_") else g[metric]

    ranked = sorted(full["groups"], key=value, reverse=descending)
    assert [value(g) for g in top["groups"]] == [value(g) for g in ranked[:2]]
    start, end = dt.datetime.fromisoformat(top["start"]), dt.datetime.fromisoformat(top["end"])
    column = {"key": "key_id", "model": "model", "provider_key": "provider_key_id", "master": "master_id"}[group_by]
    kept = [g["group"] for g in top["groups"]]
    rest = df.filter(~df[column].is_in(kept) | df[column].is_null()) if None not in kept else \
        df.filter(~df[column].is_in([k for k in kept if k is not None]) & df[column].is_not_null())
    want = expected(rest, start, end)[None]
    assert top["other"]["groups"] == len(full["groups"]) - 2
    check(top["other"], want, top["percentiles"] == "exact")
    listed = sum(g["requests"] for g in top["groups"])
    assert listed + top["other"]["requests"] == top["totals"]["requests"]


def test_series_lists_the_top_groups_of_the_period(served):
    client, df = served
    body = client.get("/admin/stats/series", params={"period": "last7d", "interval": "day", "metric": "requests",
                                                     "group_by": "model", "limit": 2, "other": "true"}).json()
    full = client.get("/admin/stats", params={"period": "last7d", "group_by": "model"}).json()
    top2 = [g["group"] for g in full["groups"][:2]]
    listed = {r["group"] for r in body["rows"] if not r["other"]}
    assert listed == set(top2) and body["sort"] == "-requests" and body["limit"] == 2
    days = sorted({r["time"] for r in body["rows"]})
    for day in days:
        at_day = [r for r in body["rows"] if r["time"] == day]
        other = next(r for r in at_day if r["other"])
        assert other["group"] is None and other["name"] == "other"
        start = dt.datetime.fromisoformat(day.replace("Z", "+00:00"))
        end = min(start + dt.timedelta(days=1), NOW)
        total = expected(df, max(start, dt.datetime.fromisoformat(body["start"])), end)
        assert sum(r["requests"] for r in at_day) == (total[None]["requests"] if total else 0)


def test_bad_top_n_parameters(served):
    client, _ = served
    assert client.get("/admin/stats", params={"group_by": "key", "sort": "-vibes"}).status_code == 422
    assert client.get("/admin/stats", params={"group_by": "key", "limit": 0}).status_code == 422


# -- names ----------------------------------------------------------------------------------------

def test_group_rows_carry_registry_names_in_one_scheme(served):
    client, _ = served
    for group_by, section in (("master", "masters"), ("key", "keys"), ("provider", "providers"),
                              ("provider_key", "provider_keys")):
        stats = client.get("/admin/stats", params={"period": "last7d", "group_by": group_by}).json()
        assert stats["groups"] and all(set(g) >= {"group", "name"} for g in stats["groups"])
        assert {g["group"]: g["name"] for g in stats["groups"] if g["name"]} == {
            i: n for i, n in NAMES[section].items() if i in {g["group"] for g in stats["groups"]}}
        series = client.get("/admin/stats/series", params={"period": "last7d", "interval": "day",
                                                           "group_by": group_by}).json()
        assert all(set(r) == {"time", "group", "name", "requests"} for r in series["rows"])
        assert all(r["name"] == NAMES[section].get(r["group"]) for r in series["rows"])
    model = client.get("/admin/stats", params={"period": "last7d", "group_by": "model"}).json()
    assert all(g["name"] is None for g in model["groups"])


# -- daily grains ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("grain", "column", "section"), [
    ("master", "master_id", "masters"), ("key", "key_id", "keys"), ("model", "model", None),
    ("provider", "provider_id", "providers"), ("provider_key", "provider_key_id", "provider_keys")])
def test_daily_serves_every_grain_with_filters_and_names(served, grain, column, section):
    client, df = served
    day = "2026-03-15"
    body = client.get("/admin/stats/daily", params={"from": day, "to": day, "grain": grain}).json()
    assert body["grain"] == grain and body["tz"] == "UTC"
    start = dt.datetime(2026, 3, 15, tzinfo=dt.UTC)
    want = expected(df, start, start + dt.timedelta(days=1), grain)
    assert {r["group"]: r["requests"] for r in body["days"]} == {g: m["requests"] for g, m in want.items()}
    for row in body["days"]:
        assert row["grain"] == grain and row["group"] == row[column]
        assert row["name"] == (NAMES[section].get(row["group"]) if section else None)
    one = next(r["group"] for r in body["days"] if r["group"] is not None)
    narrowed = client.get("/admin/stats/daily", params={"from": day, "to": day, column: one}).json()
    assert narrowed["grain"] == grain and [r["group"] for r in narrowed["days"]] == [one]


def test_daily_refuses_a_filter_of_another_grain(served):
    client, _ = served
    r = client.get("/admin/stats/daily", params={"grain": "model", "key_id": 3})
    assert r.status_code == 422 and "key_id" in r.json()["detail"]
    assert client.get("/admin/stats/daily", params={"grain": "country"}).status_code == 422


# -- tz on every stats route ----------------------------------------------------------------------

def test_tz_on_stats_series_daily_and_alert_stats(served):
    client, df = served
    tz = {"tz": "Asia/Shanghai"}
    stats = client.get("/admin/stats", params={"period": "today", **tz}).json()
    assert stats["tz"] == "Asia/Shanghai" and stats["start"] == "2026-03-17T16:00:00Z"
    check(stats["totals"], expected(df, dt.datetime(2026, 3, 17, 16, tzinfo=dt.UTC), NOW)[None],
          stats["percentiles"] == "exact")
    series = client.get("/admin/stats/series", params={"period": "today", "interval": "hour", **tz}).json()
    assert series["tz"] == "Asia/Shanghai" and series["rows"][0]["time"] == "2026-03-17T16:00:00Z"
    daily = client.get("/admin/stats/daily", params=tz).json()
    assert daily["tz"] == "Asia/Shanghai" and daily["end"] == "2026-03-17"  # yesterday in Shanghai (UTC day rows)
    alerts = client.get("/admin/alerts/stats", params={"period": "today", **tz}).json()
    assert alerts["tz"] == "Asia/Shanghai" and alerts["start"] == "2026-03-17T16:00:00Z"
    bad = client.get("/admin/stats", params={"tz": "Nowhere/Land"})
    assert bad.status_code == 422 and "time zone" in bad.json()["detail"]


# -- docs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_from_the_app(served, page):
    client, _ = served
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url: ?["']([^"']+)["']""", html)
    assert urls, html
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from another host"
        assert client.get(url).status_code == 200, url
    assert "cdn" not in html.lower() and "googleapis" not in html
    assert "default-src 'self'" in client.get(page).headers["content-security-policy"]


def test_the_ingest_body_is_documented(served):
    client, _ = served
    body = client.get("/openapi.json").json()["paths"]["/v1/logs"]["post"]["requestBody"]
    record = body["content"]["application/json"]["schema"]["items"]
    from engine.schema import FIELDS

    assert set(record["properties"]) == {f.name for f in FIELDS}
    assert set(record["required"]) == {f.name for f in FIELDS if f.required}
    assert record["additionalProperties"] is False
    assert "NDJSON" in body["content"]["application/x-ndjson"]["schema"]["description"]
    assert "Arrow IPC" in body["content"]["application/vnd.apache.arrow.stream"]["schema"]["description"]
