"""Refreshing credentials against the fake OAuth server: request shapes, due selection, backoff, deactivation."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import Engine
from engine.alerts.history import AlertFilter
from tests.credential_fixtures import NOW, MovingClock, make_engine, put
from tests.oauth_server import ANTIGRAVITY_CLIENT, CLAUDE_CLIENT, CODEX_CLIENT, GEMINI_CLIENT, FakeOAuth

HOUR = 3600


def test_each_provider_type_sends_its_own_request_shape(cred_engine: Engine, oauth: FakeOAuth):
    accounts = {pk: oauth.account(t) for pk, t in ((1, "codex"), (2, "claude-code"), (3, "gemini-cli"),
                                                    (4, "antigravity"))}
    for pk, account in accounts.items():
        put(cred_engine, pk, account)
    for pk in accounts:
        assert cred_engine.credentials.refresh(pk) == "refreshed"
    codex, claude, gemini, antigravity = oauth.requests
    assert codex.path == "/codex/oauth/token" and codex.content_type == "application/x-www-form-urlencoded"
    assert codex.body == {"grant_type": "refresh_token", "refresh_token": accounts[1].spent.pop(),
                          "client_id": CODEX_CLIENT, "scope": "openid profile email"}
    assert claude.path == "/claude/v1/oauth/token" and claude.content_type == "application/json"
    assert claude.body == {"grant_type": "refresh_token", "refresh_token": accounts[2].spent.pop(),
                           "client_id": CLAUDE_CLIENT}
    for seen, pair, account in ((gemini, GEMINI_CLIENT, accounts[3]), (antigravity, ANTIGRAVITY_CLIENT, accounts[4])):
        assert seen.path == "/google/token" and seen.content_type == "application/x-www-form-urlencoded"
        assert seen.body == {"grant_type": "refresh_token", "refresh_token": account.refresh_token,
                             "client_id": pair[0], "client_secret": pair[1]}
    # What each answer carries is kept: the rotated refresh token, the new access token, the account.
    for pk, account in accounts.items():
        token = cred_engine.credentials.token(pk, "test")
        assert token.access_token == account.access_token
        assert token.expires_at == NOW + dt.timedelta(seconds=3600)
        stored = cred_engine.credentials.store.tokens(cred_engine.credentials.store.row(pk))
        assert stored.refresh_token == account.refresh_token  # rotated (codex, claude) or kept (google)
        credential = cred_engine.credentials.get(pk)
        assert credential.email == account.email and credential.version == 2 and credential.failures == 0
    assert cred_engine.credentials.get(1).account_id == accounts[1].account_id  # from the Codex id_token
    assert cred_engine.credentials.get(2).account_id == accounts[2].account_id  # from Claude's account object


def test_the_job_refreshes_what_is_due_and_nothing_else(cred_engine: Engine, oauth: FakeOAuth, cred_clock: MovingClock):
    # Leads: codex 5 days, claude-code 4 h, google 5 min (the defaults).
    codex_due, codex_later = oauth.account("codex"), oauth.account("codex")
    put(cred_engine, 1, codex_due, expires_in=4 * 86_400)        # inside its 5-day lead: due
    put(cred_engine, 2, codex_later, expires_in=6 * 86_400)      # not yet
    put(cred_engine, 3, oauth.account("claude-code"), expires_in=3 * HOUR)   # due (lead 4 h)
    put(cred_engine, 4, oauth.account("claude-code"), expires_in=5 * HOUR)   # not yet
    put(cred_engine, 5, oauth.account("gemini-cli"), expires_in=4 * 60)      # due (lead 5 min)
    put(cred_engine, 6, oauth.account("antigravity"), expires_in=10 * 60)    # not yet
    oauth.expires_in = 30 * 86_400  # new tokens outlive every lead
    run = cred_engine.jobs.run("token_refresh")
    assert run.outcome == "ok" and run.rows == 3
    assert run.details["refreshed"] == 3 and run.details["retried"] == 0 and run.details["disabled"] == 0
    assert "refreshed 3, retried 0, disabled 0" in run.message
    assert oauth.calls() == 3
    refreshed = {c.provider_key_id for c in cred_engine.credentials.list_all().credentials if c.version == 2}
    assert refreshed == {1, 3, 5}
    # Nothing is due again until expiry minus lead comes round.
    assert cred_engine.jobs.run("token_refresh").rows == 0 and oauth.calls() == 3
    cred_clock.advance(6 * 60)  # the antigravity token is inside its lead now
    assert cred_engine.jobs.run("token_refresh").rows == 1
    assert cred_engine.credentials.get(6).version == 2 and oauth.calls() == 4


def test_retryable_failures_back_off_exponentially_within_and_across_runs(cred_engine: Engine, oauth: FakeOAuth,
                                                                          cred_clock: MovingClock):
    account = oauth.account("claude-code")
    put(cred_engine, 1, account, expires_in=60)
    oauth.fail("claude-code", 503, {"error": "temporarily_unavailable"}, times=5)
    first = cred_engine.credentials.refresh_due()
    assert (first.refreshed, first.retried, first.disabled) == (0, 1, 0)
    # Three attempts in the run (EZ_OAUTH_ATTEMPTS_PER_RUN), waiting base x 2^(n-1) x jitter [0.5, 1) between.
    assert len(cred_clock.slept) == 2
    assert 1.0 <= cred_clock.slept[0] < 2.0 and 2.0 <= cred_clock.slept[1] < 4.0
    credential = cred_engine.credentials.get(1)
    assert credential.failures == 3 and credential.status == "active"
    assert credential.last_outcome == "retryable" and "HTTP 503" in credential.last_error
    wait = (credential.next_attempt_at - cred_clock()).total_seconds()
    assert 4.0 <= wait < 8.0  # after the third failure
    # Before the backoff is over nothing is attempted...
    assert cred_engine.credentials.refresh_due().due == 0 and oauth.calls("claude-code") == 3
    cred_clock.advance(wait)
    second = cred_engine.credentials.refresh_due()
    # ...then two more failures (8-16 s waited between them), and the sixth attempt succeeds.
    assert second.refreshed == 1 and 8.0 <= cred_clock.slept[2] < 16.0
    assert 16.0 <= cred_clock.slept[3] < 30.0
    credential = cred_engine.credentials.get(1)
    assert credential.failures == 0 and credential.next_attempt_at is None and credential.version == 2
    outcomes = [a.outcome for a in cred_engine.credentials.attempts(1)][::-1]
    assert outcomes == ["imported"] + ["retryable"] * 5 + ["refreshed"]


def test_backoff_is_capped_and_in_run_waits_are_bounded(tmp_path, oauth: FakeOAuth):
    cred_clock = MovingClock()
    cred_engine = make_engine(tmp_path / "data", oauth, cred_clock, oauth_backoff_seconds=10, oauth_backoff_max_seconds=60)
    waits = [cred_engine.credentials.backoff(n) for n in range(1, 12)]
    assert all(5 <= w < 10 for w in waits[:1]) and all(30 <= w <= 60 for w in waits[3:])
    put(cred_engine, 1, oauth.account("gemini-cli"), expires_in=60)
    oauth.fail("google", 500, times=50)
    cred_engine.credentials.refresh_due()
    # 10 s x jitter then 20 s x jitter: the third wait would pass IN_RUN_SLEEP_MAX only at 40 s, so 3 attempts.
    assert len(cred_clock.slept) == 2 and oauth.calls() == 3


def test_429_honours_retry_after_and_never_disables(cred_engine: Engine, oauth: FakeOAuth, cred_clock: MovingClock):
    put(cred_engine, 1, oauth.account("codex"), expires_in=60)
    oauth.fail("codex", 429, {"error": "rate_limited"}, {"Retry-After": "120"})
    summary = cred_engine.credentials.refresh_due()
    assert summary.retried == 1 and summary.disabled == 0
    assert cred_clock.slept == [] and oauth.calls() == 1  # 120 s is over the in-run wait: the next run tries
    credential = cred_engine.credentials.get(1)
    assert credential.last_outcome == "rate_limited" and credential.status == "active"
    assert credential.next_attempt_at == cred_clock() + dt.timedelta(seconds=120)
    cred_clock.advance(119)
    assert cred_engine.credentials.refresh_due().due == 0
    cred_clock.advance(1)
    oauth.fail("codex", 429, {"error": "rate_limited"}, {"Retry-After": "9"}, times=2)
    summary = cred_engine.credentials.refresh_due()  # two more 429s, waited out in the run, then a success
    assert summary.refreshed == 1 and cred_engine.credentials.get(1).status == "active"
    assert cred_clock.slept[0] == 9 and cred_clock.slept[1] == 9  # Retry-After is longer than the backoff (2-8 s)
    assert [a.outcome for a in cred_engine.credentials.attempts(1)][:4] == ["refreshed"] + ["rate_limited"] * 3


@pytest.mark.parametrize(("failure", "outcome"), [
    ((408, {"error": "timeout"}), "retryable"),
    ((502, None), "retryable"),
    ((400, {"error": "invalid_request"}), "retryable"),
])
def test_retryable_statuses(cred_engine: Engine, oauth: FakeOAuth, failure, outcome):
    put(cred_engine, 1, oauth.account("codex"))
    oauth.fail("codex", *failure, times=3)
    assert cred_engine.credentials.refresh(1) == outcome
    assert cred_engine.credentials.get(1).status == "active"


def test_unreadable_200_and_slow_answers_are_retried(cred_engine: Engine, oauth: FakeOAuth, cred_clock: MovingClock):
    account = oauth.account("gemini-cli")
    put(cred_engine, 1, account)
    oauth.garbage = 1
    assert cred_engine.credentials.refresh(1) == "refreshed"  # garbage, then a good answer
    assert [a.outcome for a in cred_engine.credentials.attempts(1)][:2] == ["refreshed", "retryable"]
    assert "not a JSON object" in cred_engine.credentials.attempts(1)[1].error
    oauth.delay = 3.0  # over the 2 s timeout of these tests
    cred_engine.infra.settings.oauth_attempts_per_run = 1
    assert cred_engine.credentials.refresh(1) == "retryable"
    assert "did not answer in time" in cred_engine.credentials.get(1).last_error
    oauth.delay = 0.0


def test_invalid_grant_is_checked_again_then_disables_key_and_opens_the_alert(cred_engine: Engine, oauth: FakeOAuth,
                                                                                cred_clock: MovingClock):
    account = oauth.account("claude-code")
    put(cred_engine, 7, account, email=account.email)
    account.revoked = True
    assert cred_engine.credentials.refresh(7) == "disabled"
    assert oauth.calls() == 2  # re-read the stored credential, tried once more
    credential = cred_engine.credentials.get(7)
    assert credential.status == "disabled" and "invalid_grant" in credential.reason
    registry = {k.provider_key_id: k for k in cred_engine.registry.read().provider_keys}
    assert registry[7].status == "disabled" and registry[7].reason == credential.reason
    assert cred_engine.registry.inactive("provider_keys") == {7}
    alerts = cred_engine.alerts.list_alerts().alerts
    assert [(a.type, a.scope, a.provider_key_id, a.severity, a.status) for a in alerts] == [
        ("credential_invalid", "provider_key", 7, "critical", "open")]
    assert alerts[0].details["provider_type"] == "claude-code" and alerts[0].details["account"] == account.email
    # The detector keeps it open although the key is disabled (it is the reason the key is disabled).
    cred_engine.alerts.run_once(cred_clock())
    assert cred_engine.alerts.get(alerts[0].id).status == "open"
    # The job leaves a disabled credential alone; the token is not served.
    assert cred_engine.credentials.refresh_due().due == 0 and oauth.calls() == 2
    from engine.errors import Conflict

    with pytest.raises(Conflict):
        cred_engine.credentials.token(7, "gateway")
    # Re-import after signing in again: enabled, the alert resolved at once.
    account.revoked = False
    put(cred_engine, 7, account)
    assert cred_engine.credentials.get(7).status == "active"
    assert {k.provider_key_id: k.status for k in cred_engine.registry.read().provider_keys}[7] == "active"
    resolved = cred_engine.alerts.get(alerts[0].id)
    assert resolved.status == "resolved" and resolved.resolved_by == "credentials"
    assert cred_engine.credentials.refresh(7) == "refreshed"


@pytest.mark.parametrize(("status", "body"), [
    (401, {"error": "unauthorized"}),
    (400, {"error": "invalid_client"}),
    (400, {"error": "unauthorized_client"}),
    (400, {"error": "unsupported_grant_type"}),
    (400, {"error": "invalid_scope"}),
    (400, {"error": "refresh_token_expired"}),
    (400, {"error": {"code": "refresh_token_invalidated", "message": "x"}}),
])
def test_non_retryable_errors_disable(cred_engine: Engine, oauth: FakeOAuth, status, body):
    put(cred_engine, 1, oauth.account("codex"))
    oauth.fail("codex", status, body, times=2)
    assert cred_engine.credentials.refresh(1) == "disabled"
    assert cred_engine.credentials.get(1).status == "disabled"


def test_invalid_grant_during_an_outage_is_not_a_deactivation(cred_engine: Engine, oauth: FakeOAuth):
    put(cred_engine, 1, oauth.account("gemini-cli"))
    oauth.fail("google", 400, {"error": "invalid_grant"}, times=1)
    assert cred_engine.credentials.refresh(1) == "refreshed"  # the second look succeeded
    assert cred_engine.credentials.get(1).status == "active"


def test_a_reused_codex_token_says_so(cred_engine: Engine, oauth: FakeOAuth):
    account = oauth.account("codex")
    put(cred_engine, 1, account)
    stale = account.refresh_token
    assert cred_engine.credentials.refresh(1) == "refreshed"
    put(cred_engine, 2, account)  # someone imports the old file again
    cred_engine.credentials.put(2, "codex", "x" * 30, stale, NOW)
    assert cred_engine.credentials.refresh(2) == "disabled"
    assert cred_engine.credentials.get(2).reason.startswith("refresh token already used elsewhere")


def test_credential_invalid_alert_through_the_detector_and_deletion(cred_engine: Engine, oauth: FakeOAuth,
                                                                   cred_clock: MovingClock):
    account = oauth.account("codex")
    put(cred_engine, 9, account, email=account.email)
    put(cred_engine, 10, oauth.account("gemini-cli"))
    account.revoked = True
    assert cred_engine.credentials.refresh(9) == "disabled"
    detection = cred_engine.alerts.run_once(cred_clock())
    assert detection.opened == [] and detection.skipped == []  # opened already, by the refresh itself
    page = cred_engine.alerts.list_alerts(AlertFilter(type="credential_invalid"))
    assert [a.provider_key_id for a in page.alerts] == [9]  # the working credential raises nothing
    event = cred_engine.alerts.get(page.alerts[0].id).events[0]
    assert event.kind == "opened" and "codex credential of provider key 9" in event.note
    assert account.email in event.note and "invalid_grant" in event.note
    # Deleting the provider key deletes its credential (its secrets) and retires the alert.
    cred_engine.registry.sync({"deleted": {"provider_keys": [9]}})
    assert [c.provider_key_id for c in cred_engine.credentials.list_all().credentials] == [10]
    cred_clock.advance(60)
    assert cred_engine.alerts.run_once(cred_clock()).resolved == [page.alerts[0].id]
