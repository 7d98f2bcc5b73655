"""Schemathesis over the whole OpenAPI document: generated requests to every route, on a demo lake with both
tokens set, never answer a 5xx and every answer matches its documented schema (issue 10, "Keep it closed").

Deterministic (Hypothesis derandomized, a fixed example budget per operation), so a failure reproduces.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from engine import Engine, Settings

INGEST, ADMIN = "fuzz-ingest-token", "fuzz-admin-token"
NOW = dt.datetime(2026, 2, 3, 15, 30, tzinfo=dt.UTC)
EXAMPLES = 30  # per operation: about a minute for the whole document on 2 cores


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    # Token endpoints and receivers on a closed loopback port: a fuzzed refresh or channel test fails at once.
    closed = "http://127.0.0.1:9/"
    settings_ = Settings(data_dir=Path(tmp_path_factory.mktemp("fuzz")), scheduler_enabled=False,
                         ingest_token=INGEST, admin_token=ADMIN, notify_timeout_seconds=1, oauth_timeout_seconds=1,
                         **{f"oauth_{t}_token_url": closed for t in ("codex", "claude_code", "gemini_cli", "antigravity")})
    engine = Engine(settings_, clock=lambda: NOW)
    engine.generate_demo(2, 5_000, seed=5, end_day=NOW.date())
    for job in ("rollups", "daily_stats"):
        engine.jobs.run(job)
    engine.alerts.run_once(NOW)
    engine.registry.sync({"masters": [{"master_id": 1, "name": "m1"}], "keys": [{"key_id": 1, "master_id": 1}]})
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(engine=engine))


#: Every operation of the document; a test below checks that the list is whole.
OPERATIONS = [
    "GET /healthz", "GET /problems/{kind}", "POST /v1/logs", "GET /admin/jobs", "GET /admin/jobs/{name}/runs",
    "POST /admin/jobs/{name}/run", "GET /admin/keys/{key_id}/quota", "PUT /admin/keys/{key_id}/quota",
    "DELETE /admin/keys/{key_id}/quota", "GET /admin/keys/{key_id}/usage", "GET /admin/quotas",
    "GET /admin/registry", "PUT /admin/registry", "GET /admin/stats", "GET /admin/stats/daily",
    "GET /admin/stats/series", "GET /admin/alerts/thresholds", "PUT /admin/alerts/thresholds",
    "POST /admin/alerts/thresholds/preview", "GET /admin/alerts", "GET /admin/alerts/stats",
    "GET /admin/alerts/{alert_id}", "POST /admin/alerts/{alert_id}/ack", "POST /admin/alerts/{alert_id}/resolve",
    "GET /admin/alerts/thresholds/preview/{preview_id}",
    "GET /admin/credentials", "GET /admin/credentials/refresh-requests/{request_id}",
    "GET /admin/credentials/{provider_key_id}", "PUT /admin/credentials/{provider_key_id}",
    "GET /admin/credentials/{provider_key_id}/token", "GET /admin/credentials/{provider_key_id}/attempts",
    "POST /admin/credentials/{provider_key_id}/refresh",
    "GET /admin/notifications/channels", "GET /admin/notifications/channels/{name}",
    "PUT /admin/notifications/channels/{name}", "DELETE /admin/notifications/channels/{name}",
    "POST /admin/notifications/channels/{name}/test", "GET /admin/notifications/deliveries",
    "POST /admin/notifications/deliveries/retry", "GET /admin/notifications/deliveries/{delivery_id}",
    "POST /admin/notifications/deliveries/{delivery_id}/retry",
]
#: Operations without a parameter or body that could be made invalid: no negative case exists for them.
NOTHING_TO_BREAK = {"GET /healthz", "GET /problems/{kind}", "GET /admin/jobs", "POST /admin/jobs/{name}/run",
                    "GET /admin/registry", "GET /admin/alerts/thresholds", "GET /admin/credentials",
                    "GET /admin/notifications/channels"}
CASES = [(label, mode) for label in OPERATIONS for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or label not in NOTHING_TO_BREAK]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_fuzzed_operations_are_every_operation(api: schemathesis.BaseSchema):
    assert sorted(r.ok().label for r in api.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.slow
@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label} {mode.value}" for label, mode in CASES])
def test_no_route_answers_5xx_or_off_its_schema(api: schemathesis.BaseSchema, label: str, mode: GenerationMode):
    """Positive cases (valid by the document) and negative ones (each breaking it somewhere)."""
    operation = api.find_operation_by_label(label)
    assert operation is not None
    token = INGEST if operation.path.startswith("/v1/") else ADMIN

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    call()
