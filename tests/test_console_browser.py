"""The console in a real browser: headless Debian chromium (Playwright) against the real server (uvicorn in
a subprocess) over a demo lake, with every request to another host blocked (so offline)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from engine import Engine, Settings
from tests.alert_traffic import requests, store

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "console-test-token"
SECRET = "sk-console-secret-access-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("console") / "data"
    engine = Engine(Settings(data_dir=data, scheduler_enabled=False))
    engine.generate_demo(2, 20_000, 42)
    now = engine.clock().replace(microsecond=0)
    # A live incident, so there is an open alert to act on: key 9901 fails every request just now.
    store(engine, requests(now, 4, 60, master_id=99, key_id=9901, status=500))
    engine.alerts.run_once(now)
    engine.stats.refresh_rollups(now)
    alert = next(a for a in engine.alerts.list_alerts().alerts if a.key_id == 9901)
    engine.credentials.put(777, "codex", SECRET, SECRET + "-r", now + dt.timedelta(days=9), email="ops@example.com")
    port = _free_port()
    env = {**os.environ, "EZ_DATA_DIR": str(data), "EZ_ADMIN_TOKEN": TOKEN, "EZ_INGEST_TOKEN": TOKEN,
           "EZ_SCHEDULER_ENABLED": "false", "EZ_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.2)
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:
        yield {"base": base, "client": client, "alert_id": alert.id, "proc": proc}
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: .ci/setup installs Debian's chromium as root"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A browser page that refuses every request to another host and records console errors."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)
        self.base = base

    def _route(self, route: Any) -> None:
        if urlparse(route.request.url).hostname != "127.0.0.1":
            self.outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def open_console(self, query: str) -> Any:
        page = self.page
        page.goto(f"{self.base}/?{query}")
        page.fill("#token", TOKEN)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("body[data-refreshed]", timeout=30_000)
        return page


def _value(page: Any, selector: str) -> float | None:
    text = page.get_attribute(selector, "data-value")
    return None if text in (None, "") else float(text)


def test_the_console_shows_the_api_figures_acks_and_has_no_console_errors(server, browser, tmp_path):
    view = Page(browser, server["base"])
    page = view.open_console("period=today&tz=Asia/Shanghai&refresh=0")
    api = server["client"]
    stats = api.get("/admin/stats", params={"period": "today", "tz": "Asia/Shanghai"}).json()
    assert page.get_attribute("#overview", "data-tz") == "Asia/Shanghai"
    assert page.get_attribute("#overview", "data-start") == stats["start"]
    totals = stats["totals"]
    for metric in ("requests", "errors", "rate_limited", "total_tokens", "quota_cost"):
        assert _value(page, f"#m-{metric}") == totals[metric], metric
    for p in ("p50", "p95", "p99"):
        assert _value(page, f"#m-{p}") == totals["latency_ms"][p], p
    assert totals["requests"] > 0
    for group_by in ("model", "master", "key", "provider_key"):
        top = api.get("/admin/stats", params={"period": "today", "tz": "Asia/Shanghai", "group_by": group_by,
                                              "limit": 5}).json()
        rows = page.eval_on_selector_all(f"#top-{group_by} tr[data-group]", "rs => rs.map(r => [r.dataset.group, "
                                         "r.children[1].textContent, Number(r.children[2].dataset.value)])")
        assert rows == [[str(g["group"]), g["name"] or "", g["requests"]] for g in top["groups"]], group_by
    assert page.locator("#chart-traffic canvas").count() == 1 and page.locator("#chart-latency canvas").count() == 1
    jobs = page.eval_on_selector_all("#jobs-table tr[data-job]", "rs => rs.map(r => r.dataset.job)")
    assert sorted(jobs) == sorted(j["name"] for j in api.get("/admin/jobs").json())
    creds = page.eval_on_selector_all("#credentials-table tr[data-provider-key]", "rs => rs.map(r => "
                                      "[r.dataset.providerKey, r.children[1].textContent, r.children[3].textContent])")
    assert creds == [[str(c["provider_key_id"]), c["provider_type"], c["status"]]
                     for c in api.get("/admin/credentials").json()["credentials"]] == [["777", "codex", "active"]]
    assert SECRET not in page.content()  # the page shows what the API shows: masked tokens only
    assert page.is_hidden("#banner")

    alert_id = server["alert_id"]
    row = page.locator(f"#alerts-table tr[data-alert-id='{alert_id}']")
    assert row.locator("td.status").text_content() == "open"
    row.get_by_role("button", name="Ack").click()
    page.wait_for_function(f"""() => document.querySelector("#alerts-table tr[data-alert-id='{alert_id}'] td.status")
                               ?.textContent === 'acknowledged'""", timeout=15_000)
    acked = api.get(f"/admin/alerts/{alert_id}").json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "console"

    shot = Path(os.environ.get("EZ_TEST_ARTIFACTS", tmp_path)) / "console.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("EZ_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "console.png")
    assert view.errors == [], view.errors
    assert view.outside == [], view.outside
    view.context.close()


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "redoc h1, h1")])
def test_the_docs_render_with_no_network(server, browser, path, ready):
    view = Page(browser, server["base"])
    view.page.goto(server["base"] + path)
    view.page.wait_for_selector(ready, timeout=30_000)
    assert "ezstats" in view.page.text_content(ready)
    assert view.outside == [], view.outside
    view.context.close()


def test_the_console_says_so_when_the_api_errors(server, browser):
    view = Page(browser, server["base"])
    page = view.open_console("period=today&tz=UTC&refresh=0")
    assert page.is_hidden("#banner")
    # The API starts failing: every stats answer is a 500 (as when its disk is gone).
    page.route("**/admin/stats**", lambda route: route.fulfill(
        status=500, content_type="application/problem+json",
        body='{"type": "/problems/internal-error", "title": "Internal error", "status": 500}'))
    before = page.get_attribute("body", "data-refreshed")
    page.click("#controls button[type=submit]")
    page.wait_for_function(f"() => document.body.dataset.refreshed !== '{before}'", timeout=15_000)
    banner = page.text_content("#banner")
    assert page.is_visible("#banner") and "Internal error" in banner and "overview" in banner
    assert "stale" in (page.get_attribute("#overview", "class") or "")
    assert "stale" not in (page.get_attribute("#jobs", "class") or "")  # what still answers stays current
    assert page.text_content("#m-requests") not in ("", "–")  # the last good figures stay, dimmed
    view.context.close()
