"""Shared pieces of the console's browser tests (this module holds no test; its name only follows
the tests/test_console*.py pattern).

Playwright drives Debian's Chromium (Playwright's own browser download is not reachable) against the
real stack: `live_server` is gunicorn plus a Celery worker and beat. One browser per test module; a
fresh, signed-in browser context per test. Screenshots go to test-artifacts/console/.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_key

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 20_000
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@dataclass
class Tenant:
    """A tenant on the live server: its key, an API client, and a `local` device running in `workdir`."""

    name: str
    key: str
    api: httpx.Client
    device: str
    workdir: Path

    def run(self, prompt: str, command: str, **fields) -> dict:
        """Create a custom-command run on the tenant's device through the API."""
        body = {"prompt": prompt, "target_id": self.device, "provider": "custom", "command": command, **fields}
        resp = self.api.post("/api/v1/agent-runs", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        assert resp.status_code == 201, resp.text
        return resp.json()["data"]

    def get(self, run_id: str, wait: int = 0) -> dict:
        resp = self.api.get(f"/api/v1/agent-runs/{run_id}", params={"wait": wait}, timeout=wait + 10)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    def events(self, run_id: str) -> list[dict]:
        """The run's whole event log, in seq order."""
        out: list[dict] = []
        while True:
            resp = self.api.get(f"/api/v1/agent-runs/{run_id}/events",
                                params={"after_seq": out[-1]["seq"] if out else 0, "limit": 1000})
            page = resp.json()["data"]
            if not page:
                return out
            out.extend(page)


def new_tenant(base_url: str, workdir: Path) -> Tenant:
    """A new tenant with a key and a `local` device whose runs execute in workdir."""
    name, key = make_key()
    api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    resp = api.post("/api/v1/devices", json={"id": "box-1", "kind": "sandbox", "driver": "local",
                                             "default_cwd": str(workdir)})
    assert resp.status_code == 201, resp.text
    return Tenant(name, key, api, "box-1", workdir)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def tenant(app, live_server, tmp_path_factory) -> Iterator[Tenant]:
    """The module's tenant on the live server (`app` initialises the database for make_key)."""
    t = new_tenant(live_server, tmp_path_factory.mktemp("console-workdir"))
    yield t
    t.api.close()


class PageErrors:
    """Script errors and console errors (a CSP violation is one) seen by a page."""

    def __init__(self, page) -> None:
        self.messages: list[str] = []
        page.on("pageerror", lambda exc: self.messages.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.messages.append(f"console: {msg.text}")


def open_context(browser, base_url: str, viewport=None):
    context = browser.new_context(base_url=base_url, viewport=viewport or DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def sign_in(page, key: str, next_path: str = "/runs") -> None:
    """Sign in through the form and wait for the page it leads to."""
    page.goto(f"/sign-in?next={next_path}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_path}")


@pytest.fixture()
def page(browser, live_server, tenant):
    """A page signed in as the module's tenant; the test fails on any script or console error."""
    context = open_context(browser, live_server)
    pg = context.new_page()
    errors = PageErrors(pg)
    sign_in(pg, tenant.key)
    yield pg
    context.close()
    assert not errors.messages, errors.messages


def shot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot as test-artifacts/console/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
