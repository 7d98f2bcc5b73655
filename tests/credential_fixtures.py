"""What the credential tests share (a pytest plugin of conftest): the fake OAuth server, an engine pointed at it,
a clock to move."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, Settings
from tests.oauth_server import Account, FakeOAuth

NOW = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)


class MovingClock:
    """A clock tests move by hand; `sleep` moves it instead of waiting (and records each wait)."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    server = FakeOAuth().start()
    yield server
    server.stop()


def credential_settings(data_dir: Path, oauth: FakeOAuth, **extra: Any) -> Settings:
    """Settings of an engine whose token endpoints are the fake server (short timeouts for the slow cases)."""
    return Settings(data_dir=data_dir, scheduler_enabled=False, oauth_timeout_seconds=2.0,
                    **{**oauth.settings(), **extra})


def make_engine(data_dir: Path, oauth: FakeOAuth, clock: MovingClock | None = None, **extra: Any) -> Engine:
    clock = clock or MovingClock()
    engine = Engine(credential_settings(data_dir, oauth, **extra), clock=clock)
    engine.credentials.sleep = clock.sleep
    engine.credentials.rng = random.Random(7)
    return engine


@pytest.fixture
def cred_clock() -> MovingClock:
    return MovingClock()


@pytest.fixture
def cred_engine(tmp_path: Path, oauth: FakeOAuth, cred_clock: MovingClock) -> Engine:
    """An engine whose token endpoints are the fake server and whose clock (and waits) the test moves."""
    return make_engine(tmp_path / "data", oauth, cred_clock)


def put(engine: Engine, provider_key_id: int, account: Account, expires_in: float = 3600, **extra: Any) -> None:
    """Import an account of the fake server as provider key `provider_key_id`."""
    engine.credentials.put(provider_key_id, account.provider, account.access_token, account.refresh_token,
                           engine.clock() + dt.timedelta(seconds=expires_in), **extra)
