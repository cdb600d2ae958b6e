"""Webhooks in the console, in a real browser against the real stack (gunicorn, worker, beat) and a
real HTTP receiver on loopback: add an endpoint and see its secret once, real deliveries of a real
run in the delivery log, redeliver, edit and disable, rotate, delete, the per-run endpoint, form
errors, tenant isolation and CSRF."""
from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from agentruns import webhooks
from tests import test_console_kit as kit
from tests.test_console_kit import PHONE, PageErrors, expect, new_tenant, open_context, shot, sign_in
from tests.webhook_receiver import Receiver

browser, page, tenant = kit.browser, kit.page, kit.tenant  # this module's fixtures

ENDPOINT_URL = re.compile(r".*/webhooks/[0-9a-f-]{36}$")


@pytest.fixture()
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def subscribe(t: kit.Tenant, url: str, **body) -> dict:
    resp = t.api.post("/api/v1/webhooks", json={"url": url, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


def endpoint(t: kit.Tenant, endpoint_id: str) -> dict:
    resp = t.api.get(f"/api/v1/webhooks/{endpoint_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def reload_until(pg, done: Callable[[], bool], seconds: float = 20.0) -> None:
    """Reload the page until `done()` holds (the delivery log is not live)."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the page did not show it in time"
        time.sleep(0.3)
        pg.reload()


def delivery_rows(pg):
    return pg.locator("#delivery-log > tbody > tr[data-delivery-id]")


def states(pg) -> list[str]:
    return [r.get_attribute("data-state") for r in delivery_rows(pg).all()]


def test_add_an_endpoint_see_its_secret_once_and_its_real_deliveries(page, tenant, receiver):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/runs")
    page.get_by_role("link", name="Webhooks").click()
    page.wait_for_url("**/webhooks")
    expect(page.get_by_role("link", name="Webhooks")).to_have_attribute("aria-current", "page")
    page.get_by_role("link", name="Add webhook").click()
    page.get_by_label("Receiver URL").fill(receiver.url("/console"))
    page.get_by_label("Description").fill("CI notifications")
    expect(page.locator('input[name=events][value="run.*"]')).to_be_checked()  # all events by default
    expect(page.locator('input[name=events][value="run.failed"]')).to_be_disabled()  # included in run.*
    page.get_by_label("Device", exact=True).fill(tenant.device)
    page.get_by_label("Metadata").fill("suite=webhooks")
    shot(page, "webhook-new")
    page.get_by_role("button", name="Add webhook").click()
    page.wait_for_url(ENDPOINT_URL)
    endpoint_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("status")).to_contain_text("Webhook added")
    secret_box = page.locator("#secret")
    expect(secret_box).to_contain_text("this is the only time it is shown")
    secret = page.locator("#secret-value").input_value()
    assert re.fullmatch(r"whsec_\S{20,}", secret), secret
    copy = secret_box.get_by_role("button", name="Copy the signing secret")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, "webhook-created")
    page.reload()  # shown once: gone after a reload
    expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
    expect(page.locator("#secret")).to_have_count(0)
    assert secret not in page.content()
    stored = endpoint(tenant, endpoint_id)
    assert stored["events"] == ["run.*"] and stored["description"] == "CI notifications"
    assert stored["filters"] == {"target_id": tenant.device, "provider": None, "metadata": {"suite": "webhooks"}}

    # A run that does not match the filters sends nothing; one that does sends its three events.
    tenant.get(tenant.run("no match", "true")["id"], wait=30)
    run = tenant.run("notify me", "echo hi", metadata={"suite": "webhooks"})
    got = receiver.wait_for("/console", 3)
    events = [webhooks.verify(r.body, r.headers[webhooks.SIGNATURE_HEADER], secret) for r in got]
    assert [e["type"] for e in events] == ["run.queued", "run.started", "run.succeeded"]
    assert {e["data"]["id"] for e in events} == {run["id"]}
    reload_until(page, lambda: states(page) == ["delivered"] * 3)
    rows = delivery_rows(page)
    assert [r.locator("[data-cell=event_type]").text_content() for r in rows.all()] == [
        "run.succeeded", "run.started", "run.queued"]  # newest first
    succeeded = rows.first
    event_id = got[2].headers[webhooks.EVENT_ID_HEADER]
    assert succeeded.get_attribute("data-event-id") == event_id
    expect(succeeded.locator("[data-cell=last_status]")).to_have_text("200")
    expect(succeeded.locator("[data-cell=latency]")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(succeeded.locator("[data-cell=when]")).to_contain_text("delivered")
    expect(succeeded.locator("[data-cell=run]")).to_have_attribute("href", f"/runs/{run['id']}")
    attempts = succeeded.locator("[data-cell=attempts]")
    expect(attempts).to_have_text("1")
    attempts.click()
    log = page.locator(f"#attempts-{succeeded.get_attribute('data-delivery-id')}")
    expect(log).to_be_visible()
    expect(log).to_contain_text(event_id)
    expect(log.locator("table.attempts tbody tr")).to_have_count(1)
    expect(log.locator("table.attempts")).to_contain_text("200")
    shot(page, "webhook-deliveries")

    # Redeliver: a new delivery of the same event, at the top of the log, sent again.
    succeeded.get_by_role("button", name=re.compile("^Redeliver")).click()
    expect(page.get_by_role("status")).to_contain_text(f"Redelivery of run.succeeded {event_id} queued")
    expect(delivery_rows(page)).to_have_count(4)
    assert delivery_rows(page).first.get_attribute("data-event-id") == event_id
    again = receiver.wait_for("/console", 4)[3]
    assert again.headers[webhooks.EVENT_ID_HEADER] == event_id
    assert webhooks.verify(again.body, again.headers[webhooks.SIGNATURE_HEADER], secret)["type"] == "run.succeeded"
    reload_until(page, lambda: states(page) == ["delivered"] * 4)

    # Paged by cursor, 25 a page: 22 more redeliveries (through the API) make two pages.
    queued_delivery = delivery_rows(page).last.get_attribute("data-delivery-id")
    for _ in range(22):
        resp = tenant.api.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/{queued_delivery}/redeliver")
        assert resp.status_code == 202, resp.text
    page.get_by_role("link", name="Refresh").click()
    expect(delivery_rows(page)).to_have_count(25)
    page.get_by_role("link", name="Older →").click()
    expect(delivery_rows(page)).to_have_count(1)
    assert delivery_rows(page).first.get_attribute("data-delivery-id") == queued_delivery  # the oldest
    page.get_by_role("link", name="← Newest").click()
    expect(delivery_rows(page)).to_have_count(25)
    receiver.wait_for("/console", 26)  # nothing left to retry at a stopped receiver
    delivery_rows(page).first.locator("[data-cell=run]").click()
    page.wait_for_url(f"**/runs/{run['id']}")
    expect(page.locator("[data-status-badge]")).to_have_text("succeeded")


def test_edit_events_and_disable_then_rotate_and_delete(page, tenant, receiver):
    created = subscribe(tenant, receiver.url("/edit"), description="to edit")
    page.goto(f"/webhooks/{created['id']}")
    expect(page.locator("#secret")).to_have_count(0)  # made through the API: its secret was shown there
    assert created["secret"] not in page.content()
    form = page.locator("#webhook-form")
    form.locator('input[name=events][value="run.*"]').uncheck()
    form.locator('input[name=events][value="run.failed"]').check()
    form.locator('input[name=events][value="run.canceled"]').check()
    form.get_by_label("Description").fill("failures only")
    form.get_by_label("Enabled").uncheck()
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.locator(".page-head [data-webhook-state]")).to_have_text("disabled")
    expect(page.locator("[data-field=events] .chip")).to_have_text(["run.canceled", "run.failed"])
    expect(form.get_by_label("Enabled")).not_to_be_checked()
    stored = endpoint(tenant, created["id"])
    assert stored["events"] == ["run.canceled", "run.failed"]
    assert (stored["enabled"], stored["description"]) == (False, "failures only")
    assert stored["url"] == created["url"] and stored["previous_secret_expires_at"] is None

    page.get_by_role("link", name="← Webhooks").first.click()
    row = page.locator(f'tr[data-webhook-id="{created["id"]}"]')
    expect(row.locator("[data-cell=state]")).to_have_text("disabled")
    expect(row.locator("[data-cell=events]")).to_contain_text("run.failed")
    expect(row.locator("[data-cell=description]")).to_have_text("failures only")
    shot(page, "webhooks")
    page.set_viewport_size(PHONE)
    shot(page, "webhooks-phone", full_page=False)
    page.set_viewport_size(kit.DESKTOP)

    row.get_by_role("link", name=re.compile("^Open")).click()
    # The button opens its dialog from a script: click once the page (scripts included) has loaded.
    page.wait_for_url(re.compile(f"/webhooks/{created['id']}$"))
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Rotate secret").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("keeps signing beside it for a day")
    shot(page, "webhook-rotate-dialog", full_page=False)
    dialog.get_by_role("button", name="Yes, rotate").click()
    expect(page.get_by_role("heading", name="New signing secret")).to_be_visible()
    new_secret = page.locator("#secret-value").input_value()
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    expect(page.locator("#secret")).to_contain_text("The previous secret keeps signing beside this one until")
    stored = endpoint(tenant, created["id"])
    assert stored["previous_secret_expires_at"] is not None
    until = re.sub(r"(\.\d{3})\d*Z$", r"\1Z", stored["previous_secret_expires_at"])  # the page shows ms
    expect(page.locator("#secret time")).to_have_attribute("datetime", until)
    shot(page, "webhook-rotated")
    page.reload()
    expect(page.locator("#secret")).to_have_count(0)
    assert new_secret not in page.content()

    page.get_by_role("button", name="Delete webhook").click()
    page.get_by_role("dialog").get_by_role("button", name="Yes, delete").click()
    page.wait_for_url("**/webhooks")
    expect(page.get_by_role("status")).to_contain_text("deleted")
    expect(page.locator(f'tr[data-webhook-id="{created["id"]}"]')).to_have_count(0)
    assert tenant.api.get(f"/api/v1/webhooks/{created['id']}").status_code == 404


def test_a_refused_url_shows_a_form_error(browser, live_server, tenant):
    context = open_context(browser, live_server)
    page = context.new_page()
    errors = PageErrors(page)
    sign_in(page, tenant.key)
    page.goto("/webhooks/new")
    page.get_by_label("Receiver URL").fill("ftp://example.com/hook")
    page.get_by_label("Description").fill("kept as typed")
    page.locator('input[name=events][value="run.*"]').uncheck()
    page.get_by_role("button", name="Add webhook").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("url: must be an https URL")
    expect(alert).to_contain_text("events: choose at least one event type")
    expect(page.locator("#url-error")).to_have_text(re.compile("must be an https URL"))
    expect(page.get_by_label("Receiver URL")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Description")).to_have_value("kept as typed")
    shot(page, "webhook-new-errors")
    # Refused by the service's own check (core.outbound), after the form's.
    page.get_by_label("Receiver URL").fill("http://user:password@127.0.0.1:9/hook")
    page.locator('input[name=events][value="run.failed"]').check()
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#url-error")).to_have_text(re.compile("must not carry credentials"))
    expect(page.locator('input[name=events][value="run.failed"]')).to_be_checked()
    assert all("user:password" not in e["url"] for e in tenant.api.get("/api/v1/webhooks").json()["data"])
    # The form's answer is a 422, which Chromium logs; anything else (a CSP refusal) fails the test.
    unexpected = [m for m in errors.messages if "status of 422" not in m]
    assert len(errors.messages) == 2 and not unexpected, errors.messages
    context.close()


def test_the_per_run_endpoint(page, tenant, receiver):
    page.goto("/webhooks")
    per_run = page.locator("#per-run")
    expect(per_run.locator("[data-webhook-state]")).to_have_text("not set up")
    per_run.get_by_role("button", name="Create its secret").click()
    page.wait_for_url("**/webhooks/per-run")
    expect(page.get_by_role("heading", name="Per-run webhooks", exact=True)).to_be_visible()
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("whsec_")
    expect(page.locator("#webhook-form")).to_have_count(0)  # no settings, and no delete
    expect(page.get_by_role("button", name="Delete webhook")).to_have_count(0)
    run = tenant.run("tell my own receiver", "true", webhook_url=receiver.url("/own"))
    got = receiver.wait_for("/own", 3)
    assert {webhooks.verify(r.body, r.headers[webhooks.SIGNATURE_HEADER], secret)["data"]["id"] for r in got} == {
        run["id"]}
    reload_until(page, lambda: states(page) == ["delivered"] * 3)
    first = delivery_rows(page).first
    first.locator("[data-cell=attempts]").click()
    expect(page.locator(f"#attempts-{first.get_attribute('data-delivery-id')}")).to_contain_text(receiver.url("/own"))
    page.set_viewport_size(PHONE)
    page.locator("#deliveries").scroll_into_view_if_needed()
    shot(page, "webhook-per-run-phone", full_page=False)
    page.goto("/webhooks")
    expect(page.locator("#per-run [data-webhook-state]")).to_have_text("enabled")


def test_another_tenants_webhook_is_not_found_and_posts_need_the_token(browser, live_server, tenant, tmp_path):
    other = new_tenant(live_server, tmp_path)
    theirs = subscribe(other, "http://127.0.0.1:9/theirs", description="the other tenant's hook")
    mine = subscribe(tenant, "http://127.0.0.1:9/mine")
    context = open_context(browser, live_server)
    pg = context.new_page()
    sign_in(pg, tenant.key)
    for path in (f"/webhooks/{theirs['id']}", "/webhooks/not-a-webhook"):
        response = pg.goto(path)
        assert response is not None and response.status == 404, path
        expect(pg.get_by_role("heading", name="Not found")).to_be_visible()
    expect(pg.locator("body")).not_to_contain_text("the other tenant's hook")
    pg.goto(f"/webhooks/{mine['id']}")
    token = pg.locator("#webhook-form input[name=csrf_token]").input_value()
    # With this session's token, another tenant's endpoint is still not found.
    for action in ("rotate-secret", "delete", ""):
        resp = pg.request.post(f"/webhooks/{theirs['id']}/{action}".rstrip("/"), form={"csrf_token": token},
                               max_redirects=0)
        assert resp.status == 404, action
    assert endpoint(other, theirs["id"])["previous_secret_expires_at"] is None
    # Without the token (the browser's cookie goes along), nothing is done.
    for action in ("rotate-secret", "delete"):
        assert pg.request.post(f"/webhooks/{mine['id']}/{action}", max_redirects=0).status == 403
        assert pg.request.post(f"/webhooks/{mine['id']}/{action}", form={"csrf_token": "0" * 64},
                               max_redirects=0).status == 403
    assert endpoint(tenant, mine["id"])["previous_secret_expires_at"] is None
    assert pg.request.post("/webhooks/new", form={"url": "http://127.0.0.1:9/x", "events": "run.*"},
                           max_redirects=0).status == 403
    resp = pg.request.post(f"/webhooks/{mine['id']}/delete", form={"csrf_token": token}, max_redirects=0)
    assert resp.status == 302 and resp.headers["location"] == "/webhooks"
    assert tenant.api.get(f"/api/v1/webhooks/{mine['id']}").status_code == 404
    other.api.close()
    context.close()

