"""Every route's real answers match the app's own OpenAPI document (schemas, RFC 3339 times, problem+json)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from api.app import create_app
from engine import Engine, Settings
from tests.alert_traffic import NOW, Clock, minutes, requests, store
from tests.oauth_server import FakeOAuth
from tests.receivers import Receiver

#: An instant with an offset, as RFC 3339 requires (`Z` or `+hh:mm`).
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
DAY = NOW.date().isoformat()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    oauth = FakeOAuth().start()
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("contract"), scheduler_enabled=False, **oauth.settings()),
                    clock=Clock(NOW + minutes(10)))
    busy = Receiver(lambda _: (503, {"Retry-After": "60"}, b"busy")).start()   # keeps a delivery pending
    engine.notifications.put_channel("ops", {"type": "webhook", "url": busy.url, "secret": "k"})
    for key in (1, 2):
        store(engine, requests(NOW - dt.timedelta(days=1), 60, 50, key_id=key),
              requests(NOW, 5, 80, key_id=key, provider_key_id=key),
              requests(NOW, 5, 20, key_id=key, status=500, provider_key_id=key))
    engine.registry.sync({"masters": [{"master_id": 1, "name": "Acme"}]})
    engine.quotas.put(1, 1000, "daily")
    for job in ("rollups", "daily_stats"):
        engine.jobs.run(job)
    engine.alerts.run_once(NOW)
    account = oauth.account("codex")
    engine.credentials.put(31, "codex", account.access_token, account.refresh_token, NOW + dt.timedelta(days=1))
    assert engine.credentials.request_refresh(31, wait=10).outcome == "refreshed"  # refresh request 1
    engine.notifications.run()
    client = TestClient(create_app(engine=engine))
    yield client, client.get("/openapi.json").json()
    oauth.stop()
    busy.stop()


def _ids(client: TestClient) -> dict[str, int | None]:
    alerts = client.get("/admin/alerts").json()["alerts"]
    runs = client.app.state.engine.alerts.previews   # type: ignore[attr-defined]
    with runs.infra.store.connect(write=False) as con:
        preview = con.execute("SELECT coalesce(max(id), 0) FROM preview_runs").fetchone()[0]
    return {"open": next((a["id"] for a in alerts if a["status"] == "open"), None),
            "other": next((a["id"] for a in alerts[::-1] if a["status"] == "open"), None),
            "delivery": client.get("/admin/notifications/deliveries").json()["deliveries"][0]["id"],
            "preview": preview}


#: One real call per documented operation: (method, path template, concrete path, params, body, headers).
CALLS: list[tuple[str, str, str, dict[str, Any], Any, dict[str, str]]] = [
    ("get", "/healthz", "/healthz", {}, None, {}),
    ("get", "/problems/{kind}", "/problems/not-found", {}, None, {}),
    ("post", "/v1/logs", "/v1/logs", {}, [{"request_id": "c-1", "created_at": "2026-03-10T11:00:00Z", "master_id": 1,
                                          "key_id": 1, "model": "m", "status_code": 200, "latency_ms": 5,
                                          "prompt_tokens": 1, "completion_tokens": 1}], {}),
    ("get", "/admin/jobs", "/admin/jobs", {}, None, {}),
    ("get", "/admin/jobs/{name}/runs", "/admin/jobs/rollups/runs", {}, None, {}),
    ("post", "/admin/jobs/{name}/run", "/admin/jobs/quota_reset/run", {}, None, {}),
    ("get", "/admin/keys/{key_id}/quota", "/admin/keys/1/quota", {}, None, {}),
    ("put", "/admin/keys/{key_id}/quota", "/admin/keys/2/quota", {},
     {"quota_limit": 50, "reset_period": "weekly"}, {}),
    ("delete", "/admin/keys/{key_id}/quota", "/admin/keys/2/quota", {}, None, {}),
    ("get", "/admin/keys/{key_id}/usage", "/admin/keys/1/usage", {}, None, {}),
    ("get", "/admin/quotas", "/admin/quotas", {}, None, {}),
    ("get", "/admin/registry", "/admin/registry", {}, None, {}),
    ("put", "/admin/registry", "/admin/registry", {}, {"keys": [{"key_id": 1, "master_id": 1, "name": "k1"}]}, {}),
    ("get", "/admin/stats", "/admin/stats", {"period": "last7d", "group_by": "key"}, None, {}),
    ("get", "/admin/stats/daily", "/admin/stats/daily", {"from": "2026-03-09", "to": "2026-03-09"}, None, {}),
    ("get", "/admin/stats/series", "/admin/stats/series", {"period": "today", "metric": "latency_p95"}, None, {}),
    ("get", "/admin/alerts/thresholds", "/admin/alerts/thresholds", {}, None, {}),
    ("put", "/admin/alerts/thresholds", "/admin/alerts/thresholds", {}, {}, {"If-Match": "*"}),
    ("post", "/admin/alerts/thresholds/preview", "/admin/alerts/thresholds/preview", {},
     {"from": DAY, "to": DAY}, {}),
    ("get", "/admin/alerts/thresholds/preview/{preview_id}", "/admin/alerts/thresholds/preview/{preview}", {}, None,
     {}),
    ("get", "/admin/alerts", "/admin/alerts", {"limit": 1}, None, {}),
    ("get", "/admin/alerts/stats", "/admin/alerts/stats", {}, None, {}),
    ("get", "/admin/alerts/{alert_id}", "/admin/alerts/{open}", {}, None, {}),
    ("post", "/admin/alerts/{alert_id}/ack", "/admin/alerts/{open}/ack", {}, {"note": "x"}, {}),
    ("post", "/admin/alerts/{alert_id}/resolve", "/admin/alerts/{other}/resolve", {}, {}, {}),
    ("get", "/admin/credentials", "/admin/credentials", {}, None, {}),
    ("put", "/admin/credentials/{provider_key_id}", "/admin/credentials/32", {},
     {"provider_type": "gemini-cli", "access_token": "at", "refresh_token": "rt", "expires_at": "2026-03-10T13:00:00Z",
      "email": "a@example.com"}, {}),
    ("get", "/admin/credentials/{provider_key_id}", "/admin/credentials/31", {}, None, {}),
    ("get", "/admin/credentials/{provider_key_id}/token", "/admin/credentials/31/token", {}, None, {"X-Actor": "gw"}),
    ("get", "/admin/credentials/{provider_key_id}/attempts", "/admin/credentials/31/attempts", {}, None, {}),
    ("post", "/admin/credentials/{provider_key_id}/refresh", "/admin/credentials/31/refresh", {}, None, {}),
    ("get", "/admin/credentials/refresh-requests/{request_id}", "/admin/credentials/refresh-requests/1", {}, None,
     {}),
    ("get", "/admin/notifications/channels", "/admin/notifications/channels", {}, None, {}),
    ("put", "/admin/notifications/channels/{name}", "/admin/notifications/channels/spare", {},
     {"type": "slack", "url": "https://hooks.slack.example/services/T0/B0/secret", "min_interval_seconds": 60}, {}),
    ("get", "/admin/notifications/channels/{name}", "/admin/notifications/channels/spare", {}, None, {}),
    ("delete", "/admin/notifications/channels/{name}", "/admin/notifications/channels/spare", {}, None, {}),
    ("post", "/admin/notifications/channels/{name}/test", "/admin/notifications/channels/ops/test", {}, None, {}),
    ("get", "/admin/notifications/deliveries", "/admin/notifications/deliveries", {"status": "pending"}, None, {}),
    ("get", "/admin/notifications/deliveries/{delivery_id}", "/admin/notifications/deliveries/{delivery}", {},
     None, {}),
    ("post", "/admin/notifications/deliveries/{delivery_id}/retry", "/admin/notifications/deliveries/{delivery}/retry",
     {}, None, {}),
    ("post", "/admin/notifications/deliveries/retry", "/admin/notifications/deliveries/retry", {"channel": "ops"},
     None, {}),
]

#: Error answers, checked against the problem schema of the same operation.
ERRORS: list[tuple[str, str, str, dict[str, Any], Any, int]] = [
    ("get", "/admin/alerts/{alert_id}", "/admin/alerts/999999", {}, None, 404),
    ("get", "/admin/stats", "/admin/stats", {"period": "fortnight"}, None, 422),
    ("get", "/admin/stats", "/admin/stats", {"master_id": "x"}, None, 422),
    ("post", "/v1/logs", "/v1/logs", {}, [{"request_id": "", "created_at": "x"}], 422),
    ("put", "/admin/alerts/thresholds", "/admin/alerts/thresholds", {}, {}, 428),
    ("get", "/admin/jobs/{name}/runs", "/admin/jobs/nope/runs", {}, None, 404),
    ("get", "/admin/credentials/{provider_key_id}", "/admin/credentials/99", {}, None, 404),
    ("put", "/admin/credentials/{provider_key_id}", "/admin/credentials/33", {}, {"provider_type": "x"}, 422),
    ("get", "/admin/notifications/channels/{name}", "/admin/notifications/channels/nope", {}, None, 404),
    ("put", "/admin/notifications/channels/{name}", "/admin/notifications/channels/x", {},
     {"type": "webhook", "url": "http://x"}, 422),
    ("get", "/admin/notifications/deliveries", "/admin/notifications/deliveries", {"status": "lost"}, None, 422),
    ("get", "/admin/alerts/thresholds/preview/{preview_id}", "/admin/alerts/thresholds/preview/999999", {}, None, 404),
]


def _validator(doc: dict[str, Any], template: str, method: str, status: int, media: str) -> Draft202012Validator:
    responses = doc["paths"][template][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {template} answers {status}, which it does not document"
    schema = responses[str(status)]["content"][media]["schema"]
    return Draft202012Validator({**schema, "components": doc["components"]}, format_checker=FormatChecker())


def _times(schema_doc: dict[str, Any], value: Any, found: list[str]) -> None:
    """Collect every string that looks like a date-time, to check it has an offset."""
    if isinstance(value, dict):
        for v in value.values():
            _times(schema_doc, v, found)
    elif isinstance(value, list):
        for v in value:
            _times(schema_doc, v, found)
    elif isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d", value):
        found.append(value)


def test_every_operation_is_called(setup):
    _, doc = setup
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(m, t) for m, t, *_ in CALLS}


@pytest.mark.parametrize(("method", "template", "path", "params", "body", "headers"), CALLS,
                         ids=[f"{c[0]} {c[1]}" for c in CALLS])
def test_answers_match_the_openapi_document(setup, method, template, path, params, body, headers):
    client, doc = setup
    path = path.format(**_ids(client)) if "{" in path else path
    r = client.request(method, path, params=params, json=body, headers=headers)
    assert r.status_code < 300, r.text
    if r.status_code == 204:
        assert str(204) in doc["paths"][template][method]["responses"]
        return
    _validator(doc, template, method, r.status_code, "application/json").validate(r.json())
    times: list[str] = []
    _times(doc, r.json(), times)
    assert all(RFC3339.match(t) for t in times), [t for t in times if not RFC3339.match(t)]


@pytest.mark.parametrize(("method", "template", "path", "params", "body", "status"), ERRORS,
                         ids=[f"{e[0]} {e[2]} {e[5]}" for e in ERRORS])
def test_errors_are_documented_problems(setup, method, template, path, params, body, status):
    client, doc = setup
    r = client.request(method, path, params=params, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    _validator(doc, template, method, status, "application/problem+json").validate(problem)
    kind = client.get(problem["type"])
    assert kind.status_code == 200 and kind.json()["status"] == status and kind.json()["title"] == problem["title"]
