"""Registry sync: bulk upsert, deletes that stop checks but keep history, name lookups."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli import app as cli
from engine.errors import InvalidParameter
from engine.settings import get_settings
from tests.conftest import BACKENDS, control_backend
from tests.factories import make_engine, records

# Every test runs on both control stores: the SQLite file and PostgreSQL.
control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DOC = {
    "masters": [{"master_id": 1, "name": "Acme"}, {"master_id": 2, "name": "Globex", "status": "disabled"}],
    "keys": [{"key_id": 11, "master_id": 1, "name": "acme-prod"}, {"key_id": 21, "master_id": 2, "name": "gx"}],
    "providers": [
        {"provider_id": 3, "name": "OpenAI main", "provider_type": "openai",
         "keys": [{"provider_key_id": 31, "name": "primary"}, {"provider_key_id": 32, "name": "backup"}]},
        {"provider_id": 4, "name": "Claude", "provider_type": "anthropic",
         "keys": [{"provider_key_id": 41, "name": "main"}]},
    ],
}


def test_sync_upserts_in_bulk_and_names_are_looked_up(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    result = engine.registry.sync(DOC)
    assert result.upserted == {"masters": 2, "keys": 2, "providers": 2, "provider_keys": 3}
    assert engine.registry.names("providers") == {3: "OpenAI main", 4: "Claude"}
    assert engine.registry.names("provider_keys", [31, 41, 99]) == {31: "primary", 41: "main"}
    assert engine.registry.inactive("masters") == {2}
    engine.registry.sync({"providers": [{"provider_id": 3, "name": "OpenAI", "provider_type": "openai"}]})
    registry = engine.registry.read().model_dump()
    assert registry["providers"][0]["name"] == "OpenAI"
    assert [k["provider_key_id"] for k in registry["provider_keys"]] == [31, 32, 41]  # untouched


def test_deleting_a_provider_stops_its_checks_and_keeps_its_history(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    engine.registry.sync(DOC)
    engine.ingest_table(records([NOW - dt.timedelta(hours=1)] * 3, [11, 11, 21]))
    engine.quotas.put(11, 100, "daily")
    engine.quotas.put(21, 100, "daily")
    result = engine.registry.sync({"deleted": {"providers": [4], "keys": [11]}})
    assert result.deleted == {"masters": 0, "keys": 1, "providers": 1, "provider_keys": 1}
    assert engine.registry.deleted("providers") == {4} and engine.registry.deleted("provider_keys") == {41}
    assert engine.registry.inactive("provider_keys") == {41}
    assert 4 not in engine.registry.names("providers") and 41 not in engine.registry.names("provider_keys")
    assert [q.key_id for q in engine.quotas.usage(NOW)] == [21]  # no quota check for the deleted key
    # History stays: the lake still has the deleted key's records.
    assert engine.sql("SELECT count(*) AS n FROM log_records WHERE key_id = 11").column("n")[0].as_py() == 2
    # Coming back undeletes it.
    engine.registry.sync({"providers": [{"provider_id": 4, "name": "Claude"}]})
    assert engine.registry.deleted("providers") == set()


def test_replace_deletes_what_the_document_no_longer_lists(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, NOW)
    engine.registry.sync(DOC)
    engine.registry.sync({"providers": [{"provider_id": 3, "name": "OpenAI"}]}, replace=True)
    assert engine.registry.deleted("providers") == {4}
    assert engine.registry.deleted("provider_keys") == {41}  # a deleted provider's keys go with it
    assert set(engine.registry.names("masters")) == {1, 2}  # sections not given are left alone


@pytest.mark.parametrize("doc", [
    {"providers": [{"name": "no id"}]},
    {"keys": [{"key_id": 0}]},
    {"keys": [{"key_id": 1, "colour": "red"}]},
    {"masters": [{"master_id": 1, "status": "gone"}]},
    {"planets": []},
    {"deleted": {"providers": ["x"]}},
    {"provider_keys": [{"provider_key_id": 5}]},  # needs its provider
    [],
])
def test_invalid_documents_are_refused_whole(tmp_path: Path, doc: object) -> None:
    engine = make_engine(tmp_path, NOW)
    with pytest.raises(InvalidParameter):
        engine.registry.sync(doc)  # type: ignore[arg-type]
    assert all(v == [] for v in engine.registry.read().model_dump().values())


def test_registry_api_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path, NOW)
    client = TestClient(create_app(engine=engine))
    answer = client.put("/admin/registry", json=DOC)
    assert answer.status_code == 200 and answer.json()["upserted"]["provider_keys"] == 3
    assert client.put("/admin/registry", json={"keys": [{"key_id": -1}]}).status_code == 422
    assert client.put("/admin/registry?replace=true", json={"masters": [{"master_id": 1}]}).status_code == 200
    assert [m["master_id"] for m in client.get("/admin/registry").json()["masters"]] == [1]
    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        file = tmp_path / "registry.json"
        file.write_text(json.dumps({"deleted": {"providers": [3]}}))
        ran = CliRunner().invoke(cli, ["registry", "import", str(file), "--json"])
        assert ran.exit_code == 0, ran.output
        assert json.loads(ran.stdout)["deleted"]["provider_keys"] == 2
        file.write_text("{not json")
        assert CliRunner().invoke(cli, ["registry", "import", str(file)]).exit_code == 1
    finally:
        get_settings.cache_clear()
