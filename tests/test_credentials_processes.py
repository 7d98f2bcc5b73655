"""Credentials across processes: two refreshers and two schedulers on one rotating token, SIGKILL mid-refresh."""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path

import pytest

from engine.times import utc_now
from tests.credential_fixtures import MovingClock, make_engine, put
from tests.credential_processes_env import environment, spawn
from tests.oauth_server import FakeOAuth


@pytest.mark.slow
def test_two_processes_racing_spend_each_rotating_token_once(tmp_path: Path, oauth: FakeOAuth):
    data = tmp_path / "data"
    engine = make_engine(data, oauth)
    account = oauth.account("codex")
    put(engine, 1, account)
    env = environment(data, oauth)
    workers = [spawn(env, "-m", "tests.credential_worker", "loop", "1", "25") for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    outcomes = [o for out in outputs for o in out]
    assert set(outcomes) <= {"refreshed", "busy", "superseded"}
    refreshed = outcomes.count("refreshed")
    assert refreshed >= 5  # each refreshed whenever the other did not hold the lease (load decides how often)
    # Exactly one token-endpoint call per rotation: no refresh token was ever spent twice.
    assert oauth.calls("codex") == oauth.outcomes["rotated"] == refreshed
    assert oauth.outcomes["reused"] == 0
    # And the credential still works: the stored refresh token is the provider's current one.
    stored = engine.credentials.store.tokens(engine.credentials.store.row(1))
    assert stored.refresh_token == account.refresh_token
    assert engine.credentials.refresh(1) == "refreshed"


@pytest.mark.slow
def test_two_schedulers_on_one_rotating_credential(tmp_path: Path, oauth: FakeOAuth):
    data = tmp_path / "data"
    engine = make_engine(data, oauth)
    account = oauth.account("codex")
    put(engine, 1, account)  # codex tokens are refreshed 5 days ahead: every tick finds it due
    env = environment(data, oauth, EZ_SCHEDULE_TOKEN_REFRESH="1", EZ_SCHEDULE_ALERT_DETECTOR="3600",
                      EZ_SCHEDULE_ROLLUPS="3600", EZ_SCHEDULE_QUOTA_RESET="3600")
    schedulers = [spawn(env, "-m", "cli", "scheduler") for _ in range(2)]
    deadline = time.monotonic() + 90  # both start, run their first ticks, then refresh every second
    while time.monotonic() < deadline and sum(r.rows or 0 for r in engine.jobs.runs("token_refresh", 100)) < 4:
        time.sleep(0.5)
    for s in schedulers:
        s.send_signal(signal.SIGTERM)
    for s in schedulers:
        s.communicate(timeout=60)
    runs = engine.jobs.runs("token_refresh", limit=100)
    assert len({r.owner.split(":")[1] for r in runs}) >= 1 and all(r.outcome == "ok" for r in runs)
    refreshed = sum(r.rows or 0 for r in runs)
    assert refreshed >= 3
    assert oauth.calls("codex") == oauth.outcomes["rotated"] == refreshed and oauth.outcomes["reused"] == 0
    assert engine.credentials.refresh(1) == "refreshed"  # it still works


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["codex", "gemini-cli"])
def test_sigkill_between_the_providers_answer_and_the_store(tmp_path: Path, oauth: FakeOAuth, provider: str):
    """The documented outcome: a rotating token (codex) is lost with that one rotation, and the next attempt
    says so and disables the key; a non-rotating one (Google) just refreshes."""
    data = tmp_path / "data"
    engine = make_engine(data, oauth)
    account = oauth.account(provider)
    put(engine, 1, account, expires_in=60)
    oauth.delay = 30  # the provider rotates at once, then holds its answer
    worker = spawn(environment(data, oauth), "-m", "tests.credential_worker", "once", "1")
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    assert oauth.received.wait(30)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    oauth.delay = 0
    # Restart: a new engine once the dead process's lease ran out (2 x timeout + 30 s).
    clock = MovingClock(utc_now() + dt.timedelta(seconds=120))
    restarted = make_engine(data, oauth, clock)
    run = restarted.jobs.run("token_refresh")
    attempts = [(a.outcome, a.trigger) for a in restarted.credentials.attempts(1)][::-1]
    credential = restarted.credentials.get(1)
    if provider == "codex":
        assert run.details["disabled"] == 1
        assert attempts == [("imported", "import"), ("interrupted", "schedule"), ("disabled", "schedule")]
        assert credential.status == "disabled"
        assert credential.reason.startswith("refresh token already used: the rotated token was not saved")
        assert "stopped before it stored the provider's answer" in restarted.credentials.attempts(1)[1].error
        assert oauth.calls() == 3  # the killed one, then the look and the second look
        assert [a.type for a in restarted.alerts.list_alerts().alerts] == ["credential_invalid"]
    else:
        assert run.details["refreshed"] == 1
        assert attempts == [("imported", "import"), ("interrupted", "schedule"), ("refreshed", "schedule")]
        assert credential.status == "active" and oauth.calls() == 2
