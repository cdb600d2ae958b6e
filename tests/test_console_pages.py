"""The console's server side through Flask's test client: the session cookie, CSRF, redirects,
headers, escaping, tenant isolation, idempotent run creation. (The browser tests are in
test_console_browser_*.py.) The console runs on `quiet_app`: its runs stay queued."""
from __future__ import annotations

import base64
import json
import re
import uuid

import pytest

from core import db
from core.services.keys import KEY_PREFIX, revoke_key
from tests.conftest import make_key


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client, key: str, next_path: str = "/runs"):
    token = csrf_of(client.get("/sign-in").get_data(as_text=True))
    return client.post("/sign-in", data={"api_key": key, "csrf_token": token, "next": next_path})


def cookie_payload(client) -> dict:
    cookie = client.get_cookie("agentruns_console")
    assert cookie is not None
    body = cookie.value.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@pytest.fixture()
def tenant(quiet_app):
    """A tenant with a key and a local device on the quiet app; (key, device id)."""
    _, key = make_key()
    api = quiet_app.test_client()
    resp = api.post("/api/v1/devices", json={"id": "box", "kind": "sandbox", "driver": "local"},
                    headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 201, resp.get_json()
    return key, "box"


@pytest.fixture()
def console(quiet_app, tenant):
    """A test client signed in to the console as `tenant`."""
    client = quiet_app.test_client()
    assert sign_in(client, tenant[0]).status_code == 302
    return client


def api_run(quiet_app, key: str, prompt: str = "hello", **fields) -> dict:
    resp = quiet_app.test_client().post("/api/v1/agent-runs", headers={"Authorization": f"Bearer {key}"},
                                        json={"prompt": prompt, "target_id": "box", "provider": "custom",
                                              "command": "cat", **fields})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


def test_sign_in_sets_a_signed_http_only_cookie_with_the_keys_id_never_the_key(quiet_app, tenant):
    client = quiet_app.test_client()
    resp = sign_in(client, tenant[0])
    assert resp.status_code == 302 and resp.headers["Location"] == "/runs"
    header = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("agentruns_console="))
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    assert tenant[0] not in header and tenant[0][len(KEY_PREFIX):] not in header
    uuid.UUID(cookie_payload(client)["k"])  # the api_keys.id
    assert client.get("/runs").status_code == 200

    https = quiet_app.test_client()
    token = csrf_of(https.get("/sign-in", base_url="https://localhost").get_data(as_text=True))
    resp = https.post("/sign-in", data={"api_key": tenant[0], "csrf_token": token}, base_url="https://localhost")
    assert "Secure" in next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("agentruns_console="))


def test_a_forged_or_tampered_cookie_is_not_a_session(console):
    cookie = console.get_cookie("agentruns_console")
    console.set_cookie("agentruns_console", cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB"))
    assert console.get("/runs").status_code == 302


def test_a_wrong_key_does_not_sign_in(quiet_app):
    client = quiet_app.test_client()
    resp = sign_in(client, KEY_PREFIX + "not-a-real-key")
    assert resp.status_code == 401 and "not valid" in resp.get_data(as_text=True)
    assert client.get("/runs").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "javascript:x",
                                    "/\r\nLocation: https://evil.example"])
def test_next_never_leaves_the_site(quiet_app, tenant, target):
    client = quiet_app.test_client()
    assert sign_in(client, tenant[0], next_path=target).headers["Location"] == "/runs"


def test_pages_ask_to_sign_in_and_come_back(quiet_app):
    client = quiet_app.test_client()
    resp = client.get("/runs?status=failed")
    assert resp.status_code == 302 and resp.headers["Location"] == "/sign-in?next=/runs?status%3Dfailed"
    assert client.get("/runs/feed").status_code == 401  # what scripts read answers 401, not a redirect


def test_the_front_page_is_the_task_stream(console):
    assert console.get("/").headers["Location"] == "/runs"


def test_a_post_without_the_csrf_token_is_refused(quiet_app, console, tenant):
    run = api_run(quiet_app, tenant[0])
    assert console.post(f"/runs/{run['id']}/cancel").status_code == 403
    assert console.post(f"/runs/{run['id']}/cancel", data={"csrf_token": "0" * 64}).status_code == 403
    page = console.get(f"/runs/{run['id']}").get_data(as_text=True)
    assert "status-queued" in page
    resp = console.post(f"/runs/{run['id']}/cancel", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 302
    assert "status-canceled" in console.get(f"/runs/{run['id']}").get_data(as_text=True)


def test_pages_forbid_framing_and_foreign_scripts(console):
    for path in ("/runs", "/runs/new", "/devices", "/devices/new"):
        resp = console.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, path
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store"
        assert "<script>" not in resp.get_data(as_text=True)  # no inline script: CSP would block it


def test_prompts_and_outputs_show_as_text(quiet_app, console, tenant):
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    run = api_run(quiet_app, tenant[0], prompt=hostile, metadata={"t": hostile})
    for path in (f"/runs/{run['id']}", "/runs"):
        html = console.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(" in html


def test_another_tenants_run_is_not_found(quiet_app, console):
    _, other_key = make_key()
    quiet_app.test_client().post("/api/v1/devices", json={"id": "box", "kind": "sandbox", "driver": "local"},
                                 headers={"Authorization": f"Bearer {other_key}"})
    theirs = api_run(quiet_app, other_key, prompt="their secret prompt")
    for path in (f"/runs/{theirs['id']}", f"/runs/{theirs['id']}/data", "/runs/not-a-uuid"):
        resp = console.get(path)
        assert resp.status_code == 404, path
        assert "their secret prompt" not in resp.get_data(as_text=True)
    assert console.get(f"/runs/new?from={theirs['id']}").status_code == 404
    assert theirs["id"] not in console.get("/runs").get_data(as_text=True)


def test_the_new_run_form_makes_one_run_however_often_it_is_sent(console):
    form = console.get("/runs/new").get_data(as_text=True)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form).group(1)
    data = {"csrf_token": csrf_of(form), "idempotency_key": key, "target_id": "box", "provider": "custom",
            "command": "cat", "prompt": "once only", "metadata": "ticket=T-1\nteam=core", "timeout": "60"}
    first, second = console.post("/runs/new", data=data), console.post("/runs/new", data=data)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    run = console.get(first.headers["Location"] + "/data").get_json()["data"]
    assert run["metadata"] == {"ticket": "T-1", "team": "core"} and run["timeout"] == 60
    listed = console.get("/runs/feed?meta=ticket%3DT-1").get_json()["runs"]
    assert [r["id"] for r in listed] == [run["id"]]


def test_the_new_run_form_reports_what_the_api_would_refuse(console):
    form = console.get("/runs/new").get_data(as_text=True)
    resp = console.post("/runs/new", data={"csrf_token": csrf_of(form), "idempotency_key": "k-1", "target_id": "box",
                                           "provider": "custom", "prompt": "no command"})
    assert resp.status_code == 422 and "required for provider custom" in resp.get_data(as_text=True)


def test_sign_out_ends_the_session_also_for_a_copy_of_its_cookie(console):
    copy = console.get_cookie("agentruns_console").value
    page = console.get("/runs").get_data(as_text=True)
    assert console.post("/sign-out", data={"csrf_token": csrf_of(page)}).status_code == 302
    assert console.get("/runs").status_code == 302
    console.set_cookie("agentruns_console", copy)
    assert console.get("/runs").status_code == 302


def test_a_revoked_key_ends_its_sessions(console, tenant):
    assert console.get("/runs").status_code == 200
    with db.session() as s:
        assert revoke_key(s, tenant[0][: len(KEY_PREFIX) + 8])
    resp = console.get("/runs")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/sign-in")
    assert "Your session ended" in console.get(resp.headers["Location"]).get_data(as_text=True)
