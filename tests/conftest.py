"""Shared fixtures: a real engine over a temporary data dir, the real app, record factories."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine, Settings
from engine.settings import get_settings
from tests.postgres_server import PostgresServer

# The fake OAuth server and credential engines (`oauth`, `cred_engine`, `cred_clock`).
pytest_plugins = ("tests.credential_fixtures", "tests.seaweedfs")

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def make_record(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid log record as a client would send it (JSON types); overrides replace fields."""
    rec: dict[str, Any] = {
        "request_id": f"req-{i}",
        "created_at": (T0 + dt.timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "master_id": 1 + i % 3,
        "key_id": 10 + i % 5,
        "group": "default",
        "model": "gpt-4o",
        "provider_id": 7,
        "provider_type": "openai",
        "provider_key_id": 70,
        "status_code": 200,
        "latency_ms": 100 + i,
        "ttft_ms": 20,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "quota_cost": 3,
        "is_stream": True,
        "client_ip": "10.0.0.1",
    }
    rec.update(overrides)
    return {k: v for k, v in rec.items() if v is not ...}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (started on first use); each test takes a fresh database."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def control(request: pytest.FixtureRequest) -> str | None:
    """The control store of the test: None, the SQLite file (the default), or a PostgreSQL URL.

    A test runs on both stores with `@ON_BOTH`; a module runs every test on both with
    `control = pytest.fixture(params=BACKENDS, autouse=True)(control_backend)`, and `@SQLITE_ONLY` keeps one
    of its tests (one that reads the SQLite file itself, or whose cost is not the store's) on SQLite.
    """
    return control_backend(request) if hasattr(request, "param") else None


def control_backend(request: pytest.FixtureRequest) -> str | None:
    """The body of a `control` fixture parametrized over BACKENDS: None (SQLite), or a fresh PostgreSQL
    database, whose URL is also put in EZ_CONTROL_URL, so engines a test builds itself, the CLI and child
    processes use it too."""
    if request.param == "sqlite":
        request.getfixturevalue("monkeypatch").delenv("EZ_CONTROL_URL", raising=False)
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.database()
    request.getfixturevalue("monkeypatch").setenv("EZ_CONTROL_URL", url)
    return url


#: The control-store backends a test can run on (the PostgreSQL ones are marked `postgres`).
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
ON_BOTH = pytest.mark.parametrize("control", BACKENDS, indirect=True)
SQLITE_ONLY = pytest.mark.parametrize("control", ["sqlite"], indirect=True)


@pytest.fixture
def settings(tmp_path: Path, control: str | None) -> Settings:
    # The scheduler only runs in tests that ask for it (tests/test_jobs.py).
    return Settings(data_dir=tmp_path / "data", scheduler_enabled=False, control_url=control)


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return Engine(settings)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine=engine)) as c:
        yield c


@pytest.fixture
def client_for() -> Iterator[Callable[[Engine], TestClient]]:
    """Make the real app's client around an engine a test built itself."""
    clients: list[TestClient] = []

    def make(engine: Engine) -> TestClient:
        c = TestClient(create_app(engine=engine))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point the CLI's settings at the temporary data dir."""
    env = {"EZ_DATA_DIR": str(settings.data_dir)}
    if settings.control_url is not None:
        env["EZ_CONTROL_URL"] = settings.control_url.get_secret_value()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
