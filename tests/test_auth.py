"""Auth cannot be switched off by accident: an empty token is a configuration error at start, a non-loopback
bind without tokens needs --insecure, an empty bearer never matches (issue 10, "Found" 2)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli import app
from engine import Engine, Settings
from engine.settings import get_settings
from tests.conftest import make_record

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(tmp_path: Path, **tokens: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EZ_INGEST_TOKEN", "EZ_ADMIN_TOKEN")}
    return {**env, "EZ_DATA_DIR": str(tmp_path / "data"), "EZ_SCHEDULER_ENABLED": "false", **tokens}


def serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli", "serve", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listening_addresses(port: int) -> list[str]:
    """IPv4 addresses with a socket listening on `port`, read from /proc/net/tcp (state 0A = LISTEN)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.append(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return found


def wait_until_up(port: int) -> None:
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the server did not start")


@pytest.mark.parametrize("tokens", [{"EZ_ADMIN_TOKEN": ""}, {"EZ_INGEST_TOKEN": "", "EZ_ADMIN_TOKEN": ""},
                                    {"EZ_INGEST_TOKEN": "   ", "EZ_ADMIN_TOKEN": "ok"}])
def test_an_empty_token_stops_serve_at_start(tmp_path: Path, tokens):
    port = free_port()
    server = serve(environment(tmp_path, **tokens), "--host", "0.0.0.0", "--port", str(port))
    try:
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 78, stderr
    named = next(iter(k for k, v in tokens.items() if not v.strip()))
    assert f"{named}: is set but empty" in stderr and "Traceback" not in stderr
    assert listening_addresses(port) == []


def test_an_empty_token_stops_every_command(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EZ_ADMIN_TOKEN", "")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["stats", "--period", "today"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 78 and "EZ_ADMIN_TOKEN" in result.stderr


def test_without_tokens_a_public_bind_is_refused(tmp_path: Path):
    port = free_port()
    server = serve(environment(tmp_path), "--host", "0.0.0.0", "--port", str(port))
    try:
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 1
    assert "refusing to serve on 0.0.0.0" in stderr and "--insecure" in stderr
    assert listening_addresses(port) == []


def test_without_tokens_loopback_serves_and_insecure_binds_what_it_is_told(tmp_path: Path):
    for args, bound in ((("--host", "127.0.0.1"), "127.0.0.1"), (("--host", "0.0.0.0", "--insecure"), "0.0.0.0")):
        port = free_port()
        server = serve(environment(tmp_path), *args, "--port", str(port))
        try:
            wait_until_up(port)
            assert listening_addresses(port) == [bound]
            r = httpx.post(f"http://127.0.0.1:{port}/v1/logs", json=[make_record(port)])
            assert r.status_code == 201
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=30)
        assert "EZ_INGEST_TOKEN and EZ_ADMIN_TOKEN unset" in stderr
        assert ("(--insecure)" in stderr) == (bound == "0.0.0.0")


def test_an_empty_bearer_never_matches(tmp_path: Path):
    engine = Engine(Settings(data_dir=tmp_path, scheduler_enabled=False, ingest_token="in", admin_token="ad"))
    client = TestClient(create_app(engine=engine))
    body = json.dumps([make_record(1)])
    for header in ("Bearer ", "Bearer", "bearer  ", "Basic in", "Bearer in2"):
        r = client.post("/v1/logs", content=body, headers={"content-type": "application/json",
                                                           "Authorization": header})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", header
        assert client.get("/admin/stats", headers={"Authorization": header}).status_code == 401
    ok = client.post("/v1/logs", content=body, headers={"content-type": "application/json",
                                                       "Authorization": "Bearer in"})
    assert ok.status_code == 201


def test_settings_refuse_an_empty_token():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set but empty"):
        Settings(admin_token="")
