"""Redis: the gateway's refresh events consumed reliably, and the change notice on Pub/Sub, against a real
redis-server started on a free loopback port; without Redis, the signed webhook."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from engine.credentials.notify import CHANNEL, signature
from tests.credential_fixtures import MovingClock, make_engine, put
from tests.credential_processes_env import environment, spawn
from tests.oauth_server import FakeOAuth

QUEUE = "ezstats:credentials:refresh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run .ci/setup as root (it installs Debian's redis-server)")
    port = _free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def test_events_pushed_by_the_gateway_are_refreshed_and_acked(tmp_path: Path, oauth: FakeOAuth, redis_url: str):
    engine = make_engine(tmp_path / "data", oauth, redis_url=redis_url)
    for key in (1, 2):
        put(engine, key, oauth.account("gemini-cli"), expires_in=3600)  # not due
    client = redis.Redis.from_url(redis_url)
    client.lpush(QUEUE, json.dumps({"provider_key_id": 1, "reason": "401 upstream"}), "2", "not an event")
    run = engine.jobs.run("token_refresh")
    assert run.details["redis_events"] == 3 and run.details["requests"] == 2 and run.details["refreshed"] == 2
    assert engine.credentials.get(1).version == 2 and engine.credentials.get(2).version == 2
    assert client.llen(QUEUE) == 0 and client.llen(f"{QUEUE}:processing") == 0
    assert client.lrange(f"{QUEUE}:dead", 0, -1) == [b"not an event"]  # kept for a person, not lost
    assert engine.credentials.get_request(1).source == "redis"


def test_an_event_survives_a_consumer_killed_before_its_ack(tmp_path: Path, oauth: FakeOAuth, redis_url: str):
    data = tmp_path / "data"
    engine = make_engine(data, oauth, redis_url=redis_url)
    put(engine, 1, oauth.account("codex"), expires_in=30 * 86_400)  # not due
    client = redis.Redis.from_url(redis_url)
    client.lpush(QUEUE, json.dumps({"provider_key_id": 1}))
    worker = spawn(environment(data, oauth, EZ_REDIS_URL=redis_url), "-m", "tests.credential_worker",
                   "die-draining", "1")
    worker.wait(timeout=60)
    assert worker.returncode == -signal.SIGKILL
    assert client.llen(QUEUE) == 0 and client.llen(f"{QUEUE}:processing") == 1  # taken, never acked
    run = engine.jobs.run("token_refresh")
    assert run.details["redis_events"] == 1 and run.details["refreshed"] == 1
    assert client.llen(f"{QUEUE}:processing") == 0 and engine.credentials.get(1).version == 2


def test_a_refresh_is_announced_on_pubsub(tmp_path: Path, oauth: FakeOAuth, redis_url: str):
    clock = MovingClock()
    engine = make_engine(tmp_path / "data", oauth, clock, redis_url=redis_url)
    put(engine, 5, oauth.account("claude-code"))
    subscriber = redis.Redis.from_url(redis_url).pubsub()
    subscriber.subscribe(CHANNEL)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"
    assert engine.credentials.refresh(5) == "refreshed"
    message = subscriber.get_message(timeout=5)
    assert message is not None and message["channel"] == CHANNEL.encode()
    notice = json.loads(message["data"])
    assert notice == {"resource": "provider_credentials", "version": "2", "timestamp": int(clock().timestamp()),
                      "provider_key_id": 5, "provider_type": "claude-code"}
    subscriber.close()


def test_without_redis_a_signed_webhook_is_posted(tmp_path: Path, oauth: FakeOAuth):
    received: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        engine = make_engine(tmp_path / "data", oauth, credentials_webhook_url=f"http://127.0.0.1:{hook.server_port}/h",
                             credentials_webhook_secret="s3cret")
        put(engine, 3, oauth.account("antigravity"))
        assert engine.credentials.refresh(3) == "refreshed"
    finally:
        hook.shutdown()
        hook.server_close()
    headers, body = received[-1]
    assert json.loads(body)["version"] == "2" and json.loads(body)["resource"] == "provider_credentials"
    assert headers["X-Ezstats-Signature"] == signature("s3cret", int(headers["X-Ezstats-Timestamp"]), body)
    assert len(received) == 2  # the import announced version 1 too
