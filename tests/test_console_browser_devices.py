"""Devices and the API docs in a real browser: add an ssh device (its key uploaded, its host key
trusted on first use and shown by Test), edit it, and the Swagger UI page with no network."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from app.console.present import host_key_fingerprint
from tests import test_console_kit as kit
from tests.test_console_kit import PageErrors, expect, open_context, shot

browser, page, tenant = kit.browser, kit.page, kit.tenant  # this module's fixtures


def test_add_an_ssh_device_and_test_it(page, sshd, tmp_path):
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(sshd.private_key)
    page.goto("/devices")
    page.get_by_role("link", name="Add device").click()
    page.get_by_label("Id", exact=False).first.fill("ssh-box")
    page.get_by_label("Kind").select_option("computer")
    page.get_by_label("Host", exact=True).fill(sshd.host)
    page.get_by_label("Port").fill(str(sshd.port))
    page.get_by_label("Username").fill(sshd.username)
    page.get_by_label("…or upload the key file").set_input_files(str(key_file))
    page.get_by_label("Trust the host key on first use").check()
    page.get_by_label("Concurrent runs").fill("3")
    shot(page, "device-new")
    page.get_by_role("button", name="Add device").click()
    page.wait_for_url("**/devices/ssh-box")
    expect(page.get_by_role("status")).to_contain_text("Device ssh-box added")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("[data-test=outcome]")).to_have_text("reachable")
    expect(page.locator("[data-test=latency]")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"))
    fingerprint = host_key_fingerprint(sshd.host_key)
    assert fingerprint is not None
    expect(page.locator("[data-test=fingerprint]")).to_have_text(fingerprint)
    expect(page.get_by_text("pinned by this test")).to_be_visible()
    shot(page, "device")
    page.goto("/devices")
    device_row = page.locator('tr[data-device-id="ssh-box"]')
    expect(device_row.locator("[data-cell=last-test]")).to_contain_text("ok")
    expect(device_row).to_contain_text(fingerprint)
    assert sshd.private_key.strip().splitlines()[1] not in page.content()  # secrets are write-only
    shot(page, "devices")


def test_edit_concurrency_and_provider_settings(page, tenant):
    page.goto(f"/devices/{tenant.device}")
    page.get_by_label("Concurrent runs").fill("4")
    page.locator("summary", has_text="codex").click()
    page.locator("#p-codex-exe").fill("/opt/codex/bin/codex")
    page.locator("#p-codex-args").fill("--full-auto --quiet")
    page.locator("#p-codex-env").fill("OPENAI_API_KEY=sk-secret-value")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_label("Concurrent runs")).to_have_value("4")
    expect(page.locator("#p-codex-args")).to_have_value("--full-auto --quiet")
    expect(page.locator("label[for=p-codex-env]")).to_contain_text("OPENAI_API_KEY")
    assert "sk-secret-value" not in page.content()
    device = tenant.api.get(f"/api/v1/devices/{tenant.device}").json()["data"]
    assert device["max_concurrent_runs"] == 4
    assert device["providers"]["codex"] == {"executable": "/opt/codex/bin/codex",
                                            "extra_args": ["--full-auto", "--quiet"], "env_names": ["OPENAI_API_KEY"]}


def test_the_api_docs_render_their_operations_offline(browser, live_server) -> None:
    context = open_context(browser, live_server)
    blocked: list[str] = []

    def only_loopback(route):
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    pg = context.new_page()
    errors = PageErrors(pg)
    pg.goto("/api/v1/docs")
    operations = pg.locator(".opblock")
    expect(operations.first).to_be_visible()
    expect(pg.locator(".opblock-summary-path", has_text="/api/v1/agent-runs/{run_id}/cancel")).to_be_visible()
    assert operations.count() >= 10
    expect(pg.locator(".information-container .title")).to_contain_text("agentruns")
    assert blocked == [], blocked  # it did not even try to reach the internet
    assert not errors.messages, errors.messages
    shot(pg, "api-docs", full_page=False)
    context.close()
