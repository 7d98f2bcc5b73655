"""Credentials through the API and the CLI: import formats, list, token audit, on-demand refresh, metrics,
secrets kept out of every log line and answer, encryption at rest, key rotation."""

from __future__ import annotations

import datetime as dt
import json
import logging
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli import app as cli
from engine import Engine
from engine.secretbox import new_key
from engine.settings import get_settings
from tests.conftest import ON_BOTH
from tests.credential_fixtures import NOW, MovingClock, credential_settings, make_engine, put
from tests.oauth_server import FakeOAuth, jwt

runner = CliRunner()


def _files(tmp_path: Path, oauth: FakeOAuth) -> dict[str, tuple[Path, object]]:
    """One file of each format the tools write, for fresh accounts of the fake server."""
    out: dict[str, tuple[Path, object]] = {}
    codex = oauth.account("codex", "cx")
    id_token = jwt({"email": codex.email, "https://api.openai.com/auth": {"chatgpt_account_id": codex.account_id}})
    out["codex"] = (tmp_path / "auth.json", codex)
    out["codex"][0].write_text(json.dumps({"OPENAI_API_KEY": None, "last_refresh": "2026-03-30T12:00:00Z", "tokens": {
        "id_token": id_token, "access_token": codex.access_token,
        "refresh_token": codex.refresh_token, "account_id": codex.account_id}}))
    claude = oauth.account("claude-code", "cl")
    out["claude"] = (tmp_path / ".credentials.json", claude)
    out["claude"][0].write_text(json.dumps({"claudeAiOauth": {
        "accessToken": claude.access_token, "refreshToken": claude.refresh_token,
        "expiresAt": int((NOW + dt.timedelta(hours=8)).timestamp() * 1000), "scopes": ["user:inference"]}}))
    gemini = oauth.account("gemini-cli", "gm")
    out["gemini"] = (tmp_path / "oauth_creds.json", gemini)
    out["gemini"][0].write_text(json.dumps({
        "access_token": gemini.access_token, "refresh_token": gemini.refresh_token, "token_type": "Bearer",
        "id_token": jwt({"email": gemini.email}), "expiry_date": int((NOW + dt.timedelta(minutes=50)).timestamp() * 1000)}))
    anti = oauth.account("antigravity", "ag")
    out["cliproxy-antigravity"] = (tmp_path / "antigravity-ag.json", anti)
    out["cliproxy-antigravity"][0].write_text(json.dumps({
        "type": "antigravity", "access_token": anti.access_token, "refresh_token": anti.refresh_token,
        "expires_in": 3599, "timestamp": int(NOW.timestamp() * 1000), "email": anti.email}))
    cx2 = oauth.account("codex", "cx2")
    out["cliproxy-codex"] = (tmp_path / "codex-cx2.json", cx2)
    out["cliproxy-codex"][0].write_text(json.dumps({
        "type": "codex", "access_token": cx2.access_token, "refresh_token": cx2.refresh_token,
        "id_token": jwt({"email": cx2.email}), "account_id": cx2.account_id, "email": cx2.email,
        "last_refresh": "2026-03-30T12:00:00Z", "expired": "2026-04-09T12:00:00Z"}))
    gm2 = oauth.account("gemini-cli", "gm2")
    out["cliproxy-gemini"] = (tmp_path / "gemini-gm2.json", gm2)
    out["cliproxy-gemini"][0].write_text(json.dumps({
        "type": "gemini", "project_id": "p-1", "email": gm2.email, "auto": False, "checked": True,
        "token": {"access_token": gm2.access_token, "refresh_token": gm2.refresh_token, "token_type": "Bearer",
                  "expiry": "2026-04-01T12:40:00.123456789Z"}}))
    cl2 = oauth.account("claude-code", "cl2")
    out["cliproxy-claude"] = (tmp_path / "claude-cl2.json", cl2)
    out["cliproxy-claude"][0].write_text(json.dumps({
        "type": "claude", "access_token": cl2.access_token, "refresh_token": cl2.refresh_token, "email": cl2.email,
        "last_refresh": "2026-04-01T08:00:00Z", "expired": "2026-04-01T16:00:00Z"}))
    return out


@pytest.fixture
def env(tmp_path: Path, oauth: FakeOAuth, monkeypatch: pytest.MonkeyPatch):
    """The CLI's environment: the data dir and the fake token endpoints."""
    settings = credential_settings(tmp_path / "data", oauth)
    monkeypatch.setenv("EZ_DATA_DIR", str(settings.data_dir))
    for name, value in oauth.settings().items():
        monkeypatch.setenv(f"EZ_{name.upper()}", str(value))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_cli_imports_every_file_format_and_lists_them(tmp_path: Path, oauth: FakeOAuth, env):
    files = _files(tmp_path, oauth)
    args = [f"{n}={path}" for n, (path, _) in enumerate(files.values(), start=1)]
    result = runner.invoke(cli, ["credentials", "import", *args, "--json"])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(cli, ["credentials", "list", "--json"])
    rows = {c["provider_key_id"]: c for c in json.loads(listing.stdout)["credentials"]}
    # Codex's auth.json has no expiry (and this access token is no JWT): due now, the refresh learns it.
    expected = {1: ("codex", ""), 2: ("claude-code", "2026-04-01T20:00"), 3: ("gemini-cli", "2026-04-01T12:50"),
                4: ("antigravity", "2026-04-01T12:59:59"), 5: ("codex", "2026-04-09T12:00"),
                6: ("gemini-cli", "2026-04-01T12:40:00.123456"), 7: ("claude-code", "2026-04-01T16:00")}
    for key, (provider_type, expires) in expected.items():
        assert rows[key]["provider_type"] == provider_type and rows[key]["status"] == "active"
        assert rows[key]["failures"] == 0 and rows[key]["last_refresh_at"] is None
        assert rows[key]["expires_at"].startswith(expires), (key, rows[key]["expires_at"])
    assert dt.datetime.fromisoformat(rows[1]["expires_at"]) <= dt.datetime.now(dt.UTC)
    accounts = [a for _, a in files.values()]
    assert rows[1]["account_id"] == accounts[0].account_id and rows[1]["email"] == accounts[0].email  # id_token
    assert rows[3]["email"] == accounts[2].email and rows[4]["email"] == accounts[3].email
    assert rows[2]["expires_at"].startswith("2026-04-01T20:00") and rows[6]["expires_at"].startswith("2026-04-01T12:40")
    assert rows[4]["expires_at"].startswith("2026-04-01T12:59:59")
    # The registry has the provider keys now.
    registry = json.loads(runner.invoke(cli, ["registry", "show"]).stdout)
    assert {k["provider_key_id"] for k in registry["provider_keys"]} == set(range(1, 8))
    # Re-importing a known account needs no id; a new account without one is refused, naming the file.
    again = runner.invoke(cli, ["credentials", "import", str(files["claude"][0])])
    assert again.exit_code == 0 and "provider key 2" in again.output
    stray = tmp_path / "other.json"
    other = oauth.account("codex", "new")
    stray.write_text(json.dumps({"tokens": {"access_token": other.access_token, "refresh_token": other.refresh_token}}))
    refused = runner.invoke(cli, ["credentials", "import", str(stray)])
    assert refused.exit_code == 1 and "give the provider key" in refused.output
    assert other.refresh_token not in refused.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"access_token": "' + other.access_token + '", oops')
    refused = runner.invoke(cli, ["credentials", "import", f"9={bad}"])
    assert refused.exit_code == 1 and "cannot read it as JSON" in refused.output
    assert other.access_token not in refused.output


def test_cli_refresh_and_history(tmp_path: Path, oauth: FakeOAuth, env):
    account = oauth.account("claude-code")
    Engine(env).credentials.put(5, "claude-code", account.access_token, account.refresh_token, NOW)
    result = runner.invoke(cli, ["credentials", "refresh", "5"])
    assert result.exit_code == 0 and "provider key 5: refreshed" in result.output
    history = json.loads(runner.invoke(cli, ["credentials", "history", "5", "--json"]).stdout)
    assert [h["outcome"] for h in history] == ["refreshed", "imported"] and history[0]["trigger"] == "request"
    assert runner.invoke(cli, ["credentials", "refresh", "99"]).exit_code == 3
    account.revoked = True
    assert runner.invoke(cli, ["credentials", "refresh", "5"]).exit_code == 1
    refused = runner.invoke(cli, ["credentials", "refresh", "5"])
    assert refused.exit_code == 4 and "disabled" in refused.output
    run = runner.invoke(cli, ["jobs", "run", "token_refresh", "--json"])
    assert run.exit_code == 0 and json.loads(run.stdout)["details"]["disabled"] == 0


@ON_BOTH  # also on the PostgreSQL control store
def test_api_put_list_token_refresh_and_metrics(tmp_path: Path, oauth: FakeOAuth):
    clock = MovingClock()
    engine = make_engine(tmp_path / "data", oauth, clock)
    account = oauth.account("codex")
    with TestClient(create_app(engine=engine)) as client:
        body = {"provider_type": "codex", "access_token": account.access_token, "refresh_token": account.refresh_token,
                "expires_at": "2026-04-01T13:00:00Z", "account_id": account.account_id, "email": account.email}
        r = client.put("/admin/credentials/41", json=body)
        assert r.status_code == 200 and r.json()["status"] == "active" and r.json()["version"] == 1
        assert {k["provider_key_id"]: k["status"] for k in client.get("/admin/registry").json()["provider_keys"]} == {
            41: "active"}
        listed = client.get("/admin/credentials").json()["credentials"]
        assert [c["provider_key_id"] for c in listed] == [41]
        item = listed[0]
        for field in ("provider_type", "status", "expires_at", "last_refresh_at", "failures", "reason",
                      "next_attempt_at", "account_id", "email"):
            assert field in item
        assert item["expires_at"] == "2026-04-01T13:00:00Z" and item["access_token_hint"] == "…" + account.access_token[-4:]
        r = client.post("/admin/credentials/41/refresh", headers={"X-Actor": "ops"})
        assert r.status_code == 200 and r.json()["state"] == "done" and r.json()["outcome"] == "refreshed"
        assert r.json()["credential"]["version"] == 2 and r.json()["requested_by"] == "ops"
        token = client.get("/admin/credentials/41/token", headers={"X-Actor": "gateway-1"}).json()
        assert token["access_token"] == account.access_token and token["expires_at"] == "2026-04-01T13:00:00Z"
        assert engine.credentials.token_reads(41) == [(NOW.isoformat(timespec="microseconds"), "gateway-1", 2)]
        # A slow endpoint: 202 and a request to poll.
        oauth.delay = 1.5
        r = client.post("/admin/credentials/41/refresh", params={"wait": 0.2})
        assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
        location = r.headers["location"]
        for _ in range(50):
            polled = client.get(location).json()
            if polled["state"] == "done":
                break
            import time

            time.sleep(0.1)
        assert polled["outcome"] == "refreshed" and polled["credential"]["version"] == 3
        oauth.delay = 0
        metrics = client.get("/metrics").text
        assert 'ezstats_credential_refreshes_total{outcome="refreshed",provider_type="codex"} 2.0' in metrics
        assert client.get("/admin/credentials/41/attempts").json()[0]["outcome"] == "refreshed"
        assert client.get("/admin/credentials/7").status_code == 404
        assert client.post("/admin/credentials/7/refresh").status_code == 404
        naive = client.put("/admin/credentials/42", json={**body, "expires_at": "2026-04-01T13:00:00"})
        assert naive.status_code == 422


def test_no_secret_in_any_log_line_answer_job_message_or_metric(tmp_path: Path, oauth: FakeOAuth,
                                                                 caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    clock = MovingClock()
    engine = make_engine(tmp_path / "data", oauth, clock)
    accounts = {pk: oauth.account(t) for pk, t in ((1, "codex"), (2, "claude-code"), (3, "gemini-cli"),
                                                    (4, "antigravity"))}
    secrets: set[str] = set()
    answers: list[str] = []
    with TestClient(create_app(engine=engine)) as client:
        for pk, account in accounts.items():
            secrets |= {account.access_token, account.refresh_token}
            answers.append(client.put(f"/admin/credentials/{pk}", json={
                "provider_type": account.provider, "access_token": account.access_token,
                "refresh_token": account.refresh_token, "expires_at": "2026-04-01T12:01:00Z"}).text)
        oauth.fail("codex", 503, times=1)
        oauth.fail("google", 429, {"error": "rate_limited"}, {"Retry-After": "1"}, times=1)
        answers.append(client.post("/admin/jobs/token_refresh/run").text)
        for account in accounts.values():
            secrets |= {account.access_token, account.refresh_token}  # the rotated ones too
        accounts[2].revoked = True
        clock.advance(86_400)
        answers.append(client.post("/admin/credentials/2/refresh").text)
        answers.append(client.post("/admin/jobs/token_refresh/run").text)
        for path in ("/admin/credentials", "/admin/credentials/1", "/admin/credentials/2/attempts", "/admin/alerts",
                     "/admin/jobs", "/admin/jobs/token_refresh/runs", "/admin/registry", "/metrics",
                     "/admin/credentials/2/token", "/admin/credentials/refresh-requests/1"):
            answers.append(client.get(path).text)
        # Bad input that holds a token: refused without echoing it.
        answers.append(client.put("/admin/credentials/5", json={
            "provider_type": "codex", "access_token": accounts[1].access_token, "refresh_token": 7,
            "expires_at": "soon"}).text)
        answers.append(client.put("/admin/credentials/5", json={
            "provider_type": "nope", "access_token": accounts[1].access_token, "refresh_token": "x",
            "expires_at": "2026-04-01T12:01:00Z"}).text)
    assert engine.credentials.get(2).status == "disabled"
    assert any("HTTP 503" in (a.error or "") for a in engine.credentials.attempts(1, 10))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refresh of provider key" in logged and "disabled the claude-code credential" in logged
    texts = [*answers, logged, *[a.model_dump_json() for a in engine.credentials.attempts(None, 100)]]
    leaks = [(s[:12], t[:80]) for s in secrets for t in texts if s in t]
    assert leaks == []


def test_the_store_holds_no_token_in_clear_and_the_key_file_is_private(tmp_path: Path, oauth: FakeOAuth):
    engine = make_engine(tmp_path / "data", oauth)
    accounts = [oauth.account(t) for t in ("codex", "claude-code", "gemini-cli", "antigravity")]
    for pk, account in enumerate(accounts, start=1):
        put(engine, pk, account)
        assert engine.credentials.refresh(pk) == "refreshed"
    secrets = [s for a in accounts for s in (a.access_token, a.refresh_token, *a.spent)]
    data = tmp_path / "data"
    raw = b"".join(p.read_bytes() for p in data.glob("ezstats.db*"))  # the WAL included
    assert len(raw) > 10_000 and not [s for s in secrets if s.encode() in raw]
    key_file = data / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Another process on the same data dir (same key file) reads them.
    again = make_engine(data, oauth)
    assert again.credentials.token(1, "t").access_token == accounts[0].access_token


@ON_BOTH  # also on the PostgreSQL control store
def test_secret_key_setting_and_rotation(tmp_path: Path, oauth: FakeOAuth):
    old, new = new_key(), new_key()
    data = tmp_path / "data"
    engine = make_engine(data, oauth, secret_key=old)
    account = oauth.account("codex")
    put(engine, 1, account)
    assert not (data / "secret.key").exists()
    # The new key first, the old one still there to decrypt: rotate, then the old key can go.
    rotated = make_engine(data, oauth, secret_key=f"{new},{old}")
    assert rotated.credentials.token(1, "t").access_token == account.access_token
    assert rotated.rotate_secret_key()["credentials"] == 1
    only_new = make_engine(data, oauth, secret_key=new)
    assert only_new.credentials.token(1, "t").access_token == account.access_token
    from engine.errors import SecretKeyError

    with pytest.raises(SecretKeyError):
        make_engine(data, oauth, secret_key=old).credentials.token(1, "t")
    # A passphrase works as a key too; a short one is refused without echoing it.
    phrase = make_engine(tmp_path / "p", oauth, secret_key="correct horse battery staple")
    put(phrase, 1, account)
    assert phrase.credentials.token(1, "t").access_token == account.access_token
    with pytest.raises(Exception, match="neither a Fernet key") as info:
        put(make_engine(tmp_path / "q", oauth, secret_key="short"), 1, account)
    assert "short" not in str(info.value)


def test_key_file_rotation_keeps_other_processes_reading(tmp_path: Path, oauth: FakeOAuth):
    data = tmp_path / "data"
    first, second = make_engine(data, oauth), make_engine(data, oauth)
    account = oauth.account("gemini-cli")
    put(first, 1, account)
    assert second.credentials.token(1, "t").access_token == account.access_token
    assert first.rotate_secret_key(new_key=True)["credentials"] == 1
    assert len((data / "secret.key").read_text().split()) == 2
    put(first, 2, oauth.account("gemini-cli"))  # written with the new key
    assert second.credentials.token(2, "t").version == 1  # the other process re-reads the key file
