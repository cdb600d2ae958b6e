"""Signing in and out of the console in a real browser: a wrong key, tenant isolation, CSRF,
sign-out, a revoked key, the old `#key=` link."""
from __future__ import annotations

from core import db
from core.services.keys import KEY_PREFIX, revoke_key
from tests import test_console_kit as kit
from tests.test_console_kit import PageErrors, expect, new_tenant, open_context, shot, sign_in

browser, page, tenant = kit.browser, kit.page, kit.tenant  # this module's fixtures


def test_a_wrong_key_cannot_sign_in(browser, live_server):
    context = open_context(browser, live_server)
    pg = context.new_page()
    pg.goto("/runs")
    pg.wait_for_url("**/sign-in?next=/runs")
    shot(pg, "sign-in")
    pg.get_by_label("API key").fill(KEY_PREFIX + "this-is-not-a-key")
    pg.get_by_role("button", name="Sign in").click()
    expect(pg.get_by_role("alert")).to_contain_text("not valid")
    shot(pg, "sign-in-refused")
    pg.goto("/runs")
    pg.wait_for_url("**/sign-in?next=/runs")
    context.close()


def test_another_tenants_run_is_not_found(browser, live_server, tenant, tmp_path):
    other = new_tenant(live_server, tmp_path)
    theirs = other.run("the other tenant's secret", "true")
    context = open_context(browser, live_server)
    pg = context.new_page()
    sign_in(pg, tenant.key)
    response = pg.goto(f"/runs/{theirs['id']}")
    assert response is not None and response.status == 404
    expect(pg.get_by_role("heading", name="Not found")).to_be_visible()
    expect(pg.locator("body")).not_to_contain_text("the other tenant's secret")
    shot(pg, "not-found")
    other.api.close()
    context.close()


def test_a_post_without_the_csrf_token_is_refused(page, tenant):
    run = tenant.run("keep running", "sleep 30")
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("[data-status-badge]")).to_have_text("running")
    # The browser's own cookie goes along (same origin), but not the form's token.
    refused = page.request.post(f"/runs/{run['id']}/cancel", form={"csrf_token": "0" * 64}, max_redirects=0)
    assert refused.status == 403
    refused = page.request.post(f"/runs/{run['id']}/cancel", max_redirects=0)
    assert refused.status == 403
    assert tenant.get(run["id"])["status"] == "running"
    # The page's own form, token included, is accepted.
    page.get_by_role("button", name="Cancel run").click()
    page.get_by_role("button", name="Yes, cancel run").click()
    expect(page.locator("[data-status-badge]")).to_have_text("canceled")


def test_sign_out_ends_the_session(page):
    cookie = next(c for c in page.context.cookies() if c["name"] == "agentruns_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in")
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    page.goto("/devices")
    page.wait_for_url("**/sign-in?next=/devices")
    # A copy of the signed-out cookie is refused as well.
    page.context.add_cookies([cookie])
    page.goto("/runs")
    page.wait_for_url("**/sign-in?next=/runs")


def test_a_revoked_keys_session_is_refused(browser, live_server, tmp_path):
    doomed = new_tenant(live_server, tmp_path)
    context = open_context(browser, live_server)
    pg = context.new_page()
    errors = PageErrors(pg)
    sign_in(pg, doomed.key)
    with db.session() as s:
        assert revoke_key(s, doomed.key[: len(KEY_PREFIX) + 8])
    pg.goto("/runs")
    pg.wait_for_url("**/sign-in?next=/runs")
    expect(pg.get_by_role("status")).to_contain_text("Your session ended")
    assert not errors.messages, errors.messages
    doomed.api.close()
    context.close()


def test_a_link_carrying_the_key_in_its_fragment_opens_the_run(browser, live_server, tenant):
    """What the old run page did (`/runs/ID#key=...`): the key never reaches the server in the URL."""
    run = tenant.run("linked", "echo linked")
    context = open_context(browser, live_server)
    pg = context.new_page()
    pg.goto(f"/runs/{run['id']}#key={tenant.key}")
    pg.wait_for_url(f"**/runs/{run['id']}")
    expect(pg.locator("#log")).to_contain_text("linked")
    assert tenant.key not in pg.url
    context.close()
