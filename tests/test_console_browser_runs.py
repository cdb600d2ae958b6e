"""The console's run pages in a real browser against the real stack: the live task stream, a run's
live output in order (10,000 lines), cancel, metadata filters, escaping, the new-run form."""
from __future__ import annotations

import re
import time
import uuid

from tests import test_console_kit as kit
from tests.test_console_kit import PHONE, expect, open_context, shot, sign_in

browser, page, tenant = kit.browser, kit.page, kit.tenant  # this module's fixtures


def row(pg, run_id: str):
    return pg.locator(f'tr[data-run-id="{run_id}"]')


def test_a_new_run_appears_in_the_stream_without_a_reload(page, tenant):
    page.goto("/runs")
    expect(page.locator("#live-indicator")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    run = tenant.run("say hello\nsecond line of the prompt", "echo hello", metadata={"suite": "console"})
    new_row = row(page, run["id"])
    expect(new_row).to_be_visible()
    expect(new_row.locator("[data-cell=title]")).to_have_text("say hello")
    expect(new_row.locator("[data-cell=provider]")).to_have_text("custom")
    expect(new_row.locator("[data-cell=target_id]")).to_have_text(tenant.device)
    expect(new_row.locator("[data-status-badge]")).to_have_text("succeeded")  # status changes arrive too
    expect(new_row.locator("[data-cell=duration]")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(new_row.locator("[data-cell=request_id]")).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    shot(page, "runs")


def test_a_runs_output_arrives_live_and_in_order(page, tenant):
    release = tenant.workdir / f"release-{uuid.uuid4().hex[:8]}"
    command = (f"for i in 1 2 3; do echo out $i; echo err $i >&2; done; echo waiting; "
               f"while [ ! -e {release.name} ]; do sleep 0.05; done; seq -f 'line %g' 1 10000; echo done >&2")
    run = tenant.run("count to ten thousand", command)
    page.goto(f"/runs/{run['id']}")
    log = page.locator("#log")
    expect(log).to_contain_text("waiting")  # live: the run is still blocked on the release file
    expect(page.locator("[data-status-badge]")).to_have_text("running")
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    started = time.monotonic()
    release.touch()
    expect(log).to_contain_text("line 10000")
    expect(page.locator("[data-status-badge]")).to_have_text("succeeded")
    seconds = time.monotonic() - started
    expect(page.locator("#log-count")).to_have_text("10008 lines")
    # The page shows exactly the event log, stdout and stderr interleaved by seq.
    events = tenant.events(run["id"])
    expected = "".join(e["data"] for e in events if e["type"] in ("stdout", "stderr"))
    assert log.text_content() == expected
    assert expected.index("out 1") < expected.index("out 2") < expected.index("out 3") < expected.index("waiting")
    assert page.locator("#log .stderr").first.text_content().startswith("err")
    # Appended in batches into few nodes, never one per line or a re-render.
    assert page.evaluate("document.getElementById('log').childElementCount") < 500
    assert seconds < 15, seconds
    expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    expect(page.locator('[data-field="exit_code"]')).to_have_text("0")
    shot(page, "run")
    page.set_viewport_size(PHONE)
    shot(page, "run-phone", full_page=False)


def test_cancel_a_running_run(page, tenant):
    run = tenant.run("wait a minute", "echo started; sleep 60")
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("#log")).to_contain_text("started")
    page.get_by_role("button", name="Cancel run").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    shot(page, "run-cancel-dialog", full_page=False)
    dialog.get_by_role("button", name="Yes, cancel run").click()
    expect(page.locator("[data-status-badge]")).to_have_text("canceled")
    expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    assert tenant.get(run["id"])["status"] == "canceled"


def test_filter_the_stream_by_metadata(page, tenant):
    ticket = uuid.uuid4().hex[:8]
    wanted = tenant.run("the wanted one", "true", metadata={"ticket": f"A-{ticket}"})
    other = tenant.run("another", "true", metadata={"ticket": f"B-{ticket}"})
    page.goto("/runs")
    expect(row(page, other["id"])).to_be_visible()
    page.get_by_label("Metadata").fill(f"ticket=A-{ticket}")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(rf"meta=ticket%3DA-{ticket}"))
    expect(row(page, wanted["id"])).to_be_visible()
    expect(page.locator("tr[data-run-id]")).to_have_count(1)
    shot(page, "runs-filtered")
    page.reload()  # the view lives in the URL
    expect(page.get_by_label("Metadata")).to_have_value(f"ticket=A-{ticket}")
    expect(page.locator("tr[data-run-id]")).to_have_count(1)


def test_html_in_a_prompt_and_its_output_shows_as_text(page, tenant):
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    run = tenant.run(hostile, "cat")
    page.goto("/runs")
    expect(row(page, run["id"]).locator("[data-cell=title]")).to_have_text(hostile)
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("#prompt")).to_have_text(hostile)
    expect(page.locator("#log")).to_have_text(hostile)
    expect(page.locator('[data-field="stdout"]')).to_have_text(hostile)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0


def test_start_a_run_from_the_form_and_run_it_again(page, tenant):
    page.goto("/runs/new")
    expect(page.get_by_label("Target")).to_have_value(tenant.device)
    page.get_by_label("Provider", exact=True).select_option("custom")
    page.get_by_label("Command").fill("echo from the form")
    page.get_by_label("Metadata").fill("origin=console")
    page.get_by_label("Prompt").fill("made in the browser")
    shot(page, "new-run")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    expect(page.locator("#log")).to_contain_text("from the form")
    expect(page.locator('[data-field="metadata"]')).to_contain_text('"origin": "console"')
    page.get_by_role("link", name="Run again").click()
    expect(page.get_by_label("Prompt")).to_have_value("made in the browser")
    expect(page.get_by_label("Command")).to_have_value("echo from the form")
    expect(page.get_by_label("Metadata")).to_have_value("origin=console")


def test_the_stream_reads_on_a_phone(browser, live_server, tenant):
    context = open_context(browser, live_server, PHONE)
    pg = context.new_page()
    tenant.run("a run to show on a phone, with a long first line that has to wrap on a narrow screen", "true")
    sign_in(pg, tenant.key)
    expect(pg.locator("tr[data-run-id]").first).to_be_visible()
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width  # nothing wider than the screen
    shot(pg, "runs-phone", full_page=False)
    context.close()


def test_the_console_reads_in_a_dark_scheme(browser, live_server, tenant):
    run = tenant.run("fail on purpose", "echo to stdout; echo to stderr >&2; exit 3")
    context = open_context(browser, live_server)
    pg = context.new_page()
    sign_in(pg, tenant.key)
    expect(row(pg, run["id"]).locator("[data-status-badge]")).to_have_text("failed")
    light = pg.evaluate("getComputedStyle(document.body).backgroundColor")
    shot(pg, "runs-stream", full_page=False)  # the light scheme, with the module's runs
    pg.emulate_media(color_scheme="dark")
    pg.goto(f"/runs/{run['id']}")
    expect(pg.locator("[data-status-badge]")).to_have_text("failed")
    expect(pg.locator('[data-field="error"]')).to_contain_text("nonzero_exit")
    background = pg.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)" and light == "rgb(245, 246, 248)", (background, light)
    shot(pg, "run-dark")
    pg.goto("/runs")
    shot(pg, "runs-dark", full_page=False)
    context.close()
