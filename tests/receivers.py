"""Receivers for the notification tests: a loopback HTTP server we can take down and bring back, and a real
Prometheus Alertmanager (Debian's `prometheus-alertmanager`, started on free loopback ports)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


@dataclass(frozen=True)
class Received:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float   # time.time() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


#: What to answer a request: (status, headers, body).
Answer = Callable[[Received], tuple[int, dict[str, str], bytes]]


def ok(_: Received) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b"ok"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A loopback HTTP server recording every POST. `stop()` takes it down (connections are refused);
    `start()` brings it back on the same port. `answer` decides each response; `delay` slows it down."""

    def __init__(self, answer: Answer = ok, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.port = free_port()
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, headers, answer = receiver.answer(got)
                with receiver._lock:
                    receiver.requests.append(got)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        for attempt in range(50):   # the port can linger for a moment after stop()
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        assert self._server is not None
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json() for r in self.requests]


@contextmanager
def receiver(answer: Answer = ok, delay: float = 0.0) -> Iterator[Receiver]:
    r = Receiver(answer, delay).start()
    try:
        yield r
    finally:
        r.stop()


@contextmanager
def alertmanager(tmp_path: Path, webhook_url: str, resolve_timeout: str = "5m") -> Iterator[str]:
    """A real Alertmanager on a free loopback port whose one receiver is `webhook_url` (with resolved
    notifications), each alert its own group, notifying within a second; yields its base URL."""
    if not ALERTMANAGER.exists():
        pytest.fail(f"{ALERTMANAGER} is missing: run .ci/setup as root (it installs Debian's prometheus-alertmanager)")
    port = free_port()
    folder = tmp_path / f"alertmanager-{port}"
    folder.mkdir()
    (folder / "alertmanager.yml").write_text(f"""
global:
  resolve_timeout: {resolve_timeout}
route:
  receiver: pager
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: pager
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
""")
    process = subprocess.Popen(
        [str(ALERTMANAGER), f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(folder / "log.txt").open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("alertmanager did not start: " + (folder / "log.txt").read_text()[-2000:])
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, every: float = 0.1) -> Any:
    """Poll `condition` until it is truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)
