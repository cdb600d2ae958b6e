"""/api/v1/webhooks: endpoints, secrets, validation and the request-forgery rules (a real PostgreSQL)."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from core.outbound import Refused, forbidden_reason, resolve

HOOK = "https://hooks.example.test/agentruns"  # resolves only in this process (example_resolves)
# Where tests whose runs make deliveries point: the workers really send, and only to loopback (a closed port).
LOOP = "https://127.0.0.1:9/agentruns"


@pytest.fixture()
def example_resolves(monkeypatch):
    """hooks.example.test resolves to a public address (TEST-NET is refused as reserved; 93.184.215.14 is not)."""
    import socket

    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "hooks.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def create(client, auth, **body):
    resp = client.post("/api/v1/webhooks", json={"url": HOOK, **body}, headers=auth)  # body's url wins
    assert resp.status_code == 201, resp.get_json()
    return resp


def test_create_shows_the_secret_once(client, auth, example_resolves):
    resp = create(client, auth, events=["run.succeeded", "run.failed"], description="ci results",
                  filters={"provider": "codex", "metadata": {"team": "infra", "n": 2}})
    data = resp.get_json()["data"]
    assert resp.headers["Location"] == f"/api/v1/webhooks/{data['id']}"
    assert data["secret"].startswith("whsec_") and len(data["secret"]) > 40
    assert data["events"] == ["run.failed", "run.succeeded"] and data["enabled"] is True
    assert data["filters"] == {"target_id": None, "provider": "codex", "metadata": {"team": "infra", "n": 2}}
    shown = client.get(f"/api/v1/webhooks/{data['id']}", headers=auth).get_json()["data"]
    assert "secret" not in shown and shown["description"] == "ci results" and shown["per_run"] is False
    assert [w["id"] for w in client.get("/api/v1/webhooks", headers=auth).get_json()["data"]] == [data["id"]]


def test_events_default_to_all(client, auth, example_resolves):
    assert create(client, auth).get_json()["data"]["events"] == ["run.*"]


def test_update_and_delete(client, auth, example_resolves):
    wid = create(client, auth).get_json()["data"]["id"]
    resp = client.patch(f"/api/v1/webhooks/{wid}", json={"events": ["run.canceled"], "enabled": False,
                                                         "filters": {"target_id": "box-1"}}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()["data"]
    assert (data["events"], data["enabled"], data["filters"]["target_id"]) == (["run.canceled"], False, "box-1")
    assert client.delete(f"/api/v1/webhooks/{wid}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/webhooks/{wid}", headers=auth).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{wid}", headers=auth).status_code == 404


def test_rotation_returns_a_new_secret_and_keeps_the_old_for_a_while(client, auth, example_resolves):
    created = create(client, auth).get_json()["data"]
    resp = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=auth)
    assert resp.status_code == 200, resp.get_json()
    rotated = resp.get_json()["data"]
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_expires_at"] is not None


def test_per_run_endpoint_is_created_by_rotation_or_first_use(client, auth, local_device, example_resolves):
    assert client.get("/api/v1/webhooks/per-run", headers=auth).status_code == 404
    resp = client.post("/api/v1/agent-runs", json={"target_id": local_device["id"], "provider": "custom",
                                                   "command": "true", "prompt": "p", "webhook_url": LOOP},
                       headers=auth)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["data"]["webhook_url"] == LOOP
    per_run = client.get("/api/v1/webhooks/per-run", headers=auth).get_json()["data"]
    assert (per_run["id"], per_run["per_run"], per_run["url"]) == ("per-run", True, None)
    rotated = client.post("/api/v1/webhooks/per-run/rotate-secret", headers=auth).get_json()["data"]
    assert rotated["secret"].startswith("whsec_")
    assert client.patch("/api/v1/webhooks/per-run", json={"enabled": False}, headers=auth).status_code == 422
    assert all(w["id"] != "per-run" for w in client.get("/api/v1/webhooks", headers=auth).get_json()["data"])


def test_rotating_the_per_run_secret_creates_it(client, auth):
    resp = client.post("/api/v1/webhooks/per-run/rotate-secret", headers=auth)
    assert resp.status_code == 200 and resp.get_json()["data"]["secret"].startswith("whsec_")


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://hooks.example.test/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({}, "url"),
    ({"url": HOOK, "events": ["run.exploded"]}, "events"),
    ({"url": HOOK, "events": []}, "events"),
    ({"url": HOOK, "filters": {"metadata": {"k": {"nested": 1}}}}, "filters"),
    ({"url": HOOK, "filters": {"provider": "gpt"}}, "filters"),
    ({"url": HOOK, "description": "x" * 501}, "description"),
    ({"url": "https://user:pw@hooks.example.test/x"}, "url"),
    ({"url": "https://hooks.example.test/café"}, "url"),
])
def test_invalid_bodies_are_422_naming_the_field(client, auth, example_resolves, body, field):
    resp = client.post("/api/v1/webhooks", json=body, headers=auth)
    assert resp.status_code == 422, resp.get_json()
    fields = resp.get_json()["error"]["details"]["fields"]
    assert [f for f in fields if f.split(".")[0] == field], fields


def test_another_tenants_webhook_is_not_found(client, auth, example_resolves):
    from tests.conftest import make_key

    wid = create(client, auth).get_json()["data"]["id"]
    other = {"Authorization": f"Bearer {make_key()[1]}"}
    for method, path in [("get", ""), ("patch", ""), ("delete", ""), ("post", "/rotate-secret"),
                         ("get", "/deliveries")]:
        kwargs = {"json": {"enabled": False}} if method == "patch" else {}
        resp = getattr(client, method)(f"/api/v1/webhooks/{wid}{path}", headers=other, **kwargs)
        assert resp.status_code == 404, (method, path)
    assert client.get("/api/v1/webhooks", headers=other).get_json()["data"] == []
    assert client.get(f"/api/v1/webhooks/{wid}", headers=auth).status_code == 200


def test_unknown_and_malformed_ids_are_404(client, auth):
    for wid in ("00000000-0000-0000-0000-000000000000", "nope"):
        assert client.get(f"/api/v1/webhooks/{wid}", headers=auth).status_code == 404
    resp = client.post("/api/v1/webhooks/per-run/deliveries/nope/redeliver", headers=auth)
    assert resp.status_code == 404


# --- server-side request forgery ------------------------------------------------------------------------
@pytest.fixture()
def strict_client(app):
    """The API as an operator runs it by default: https only, no internal addresses."""
    from app import create_app

    strict = create_app(replace(app.extensions["settings"], webhook_allow_http=False, webhook_allow_private=False))
    return strict.test_client()


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook", "https://0.0.0.0/hook", "https://localhost/hook",
    "https://192.168.1.10/hook", "https://100.64.0.1/hook", "https://224.0.0.1/hook",
])
def test_internal_addresses_are_refused_without_the_opt_in(strict_client, auth, local_device, url):
    resp = strict_client.post("/api/v1/webhooks", json={"url": url}, headers=auth)
    assert resp.status_code == 422, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "webhook_url_refused" and "AGENTRUNS_WEBHOOK_ALLOW_PRIVATE" in error["message"]
    run = strict_client.post("/api/v1/agent-runs", json={"target_id": local_device["id"], "provider": "custom",
                                                         "command": "true", "prompt": "p", "webhook_url": url},
                             headers=auth)
    assert run.status_code == 422 and "webhook_url" in run.get_json()["error"]["details"]["fields"]


def test_http_is_refused_without_the_opt_in(strict_client, auth, example_resolves):
    resp = strict_client.post("/api/v1/webhooks", json={"url": "http://hooks.example.test/x"}, headers=auth)
    assert resp.status_code == 422 and "https" in resp.get_json()["error"]["message"]
    assert strict_client.post("/api/v1/webhooks", json={"url": HOOK}, headers=auth).status_code == 201


def test_a_name_that_does_not_resolve_is_refused(client, auth, monkeypatch):
    import socket

    def nxdomain(host, *args, **kwargs):  # as the resolver answers, without asking one
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", nxdomain)
    resp = client.post("/api/v1/webhooks", json={"url": "https://no-such-host.invalid/x"}, headers=auth)
    assert resp.status_code == 422 and "does not resolve" in resp.get_json()["error"]["message"]


@pytest.mark.unit
@pytest.mark.parametrize("address, refused", [
    ("127.0.0.1", True), ("10.0.0.1", True), ("172.16.5.4", True), ("192.168.0.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.251", True),
    ("::1", True), ("fe80::1", True), ("fc00::1", True), ("::ffff:10.0.0.1", True), ("ff02::1", True),
    ("::", True), ("192.0.2.1", True),  # TEST-NET: documentation only
    ("64:ff9b::a9fe:a9fe", True), ("64:ff9b::a00:1", True), ("2002:a9fe:a9fe::", True), ("::127.0.0.1", True),
    ("fec0::1", True), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),  # NAT64, 6to4, compatible, site-local, Teredo
    ("93.184.215.14", False), ("8.8.8.8", False), ("2606:4700:4700::1111", False),
    ("64:ff9b::808:808", False), ("2002:808:808::", False),  # NAT64 and 6to4 of 8.8.8.8
])
def test_address_rules(address, refused):
    import ipaddress

    assert (forbidden_reason(ipaddress.ip_address(address)) is not None) is refused


@pytest.mark.unit
def test_a_name_with_any_internal_address_is_refused(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 443))])
    with pytest.raises(Refused, match="link-local") as refused:
        resolve("rebinding.example.test", 443, allow_private=False)
    assert "169.254" not in str(refused.value)  # the internal address is not echoed to the tenant
    assert resolve("rebinding.example.test", 443, allow_private=True) == ["93.184.215.14", "169.254.169.254"]


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "127.0.0.1"])
def test_a_name_resolving_to_an_internal_address_is_refused(strict_client, auth, monkeypatch, address):
    import socket

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 443))] if host == "inside.example.test"
        else real(host, *a, **k))
    resp = strict_client.post("/api/v1/webhooks", json={"url": "https://inside.example.test/hook"}, headers=auth)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "webhook_url_refused"
    assert address not in resp.get_json()["error"]["message"]


def test_the_per_run_endpoint_cannot_be_deleted(client, auth):
    client.post("/api/v1/webhooks/per-run/rotate-secret", headers=auth)
    resp = client.delete("/api/v1/webhooks/per-run", headers=auth)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "per_run_endpoint"
    assert client.get("/api/v1/webhooks/per-run", headers=auth).status_code == 200


def test_a_first_rotation_of_the_per_run_secret_has_no_previous_secret(client, auth):
    first = client.post("/api/v1/webhooks/per-run/rotate-secret", headers=auth)
    assert first.get_json()["data"]["previous_secret_expires_at"] is None
    assert first.headers["Cache-Control"] == "no-store"
    again = client.post("/api/v1/webhooks/per-run/rotate-secret", headers=auth).get_json()["data"]
    assert again["previous_secret_expires_at"] is not None


# --- an endpoint's changes never hold up a run's status change ------------------------------------------
def _create_run_in_thread(client, auth, device) -> dict:
    import threading

    out: dict = {}

    def create():
        out["resp"] = client.post("/api/v1/agent-runs", json={
            "target_id": device["id"], "provider": "custom", "command": "true", "prompt": "p"}, headers=auth)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join(5)
    out["blocked"] = thread.is_alive()
    out["thread"] = thread
    return out


@pytest.mark.parametrize("holder", [
    "DELETE FROM webhook_endpoints WHERE id = %(id)s",  # a delete in progress
    "SELECT 1 FROM webhook_endpoints WHERE id = %(id)s FOR NO KEY UPDATE",  # how the service locks a change
])
def test_a_run_is_created_while_its_endpoint_is_being_changed(quiet_client, auth, local_device, settings, holder,
                                                               example_resolves):
    import psycopg

    hook = create(quiet_client, auth, url=LOOP).get_json()["data"]
    with psycopg.connect(settings.database_url.replace("postgresql+psycopg://", "postgresql://")) as other:
        other.execute(holder, {"id": hook["id"]})  # holds the endpoint's row until this transaction ends
        out = _create_run_in_thread(quiet_client, auth, local_device)
        other.rollback()
    out["thread"].join(10)
    assert not out["blocked"], "the run's create waited for the endpoint's lock"
    assert out["resp"].status_code == 201, out["resp"].get_json()


def test_webhook_answers_match_the_document(quiet_client, auth, local_device, example_resolves):
    """Every webhook operation's real answers (successes and errors) validate against the OpenAPI document."""
    from tests.test_openapi_spec import check_answer

    client = quiet_client
    spec = client.get("/api/v1/openapi.json").get_json()

    def call(method, template, path=None, **kwargs):
        resp = client.open(path or template, method=method.upper(), headers=auth, **kwargs)
        check_answer(spec, method, template, resp)
        return resp

    hooks, hook = "/api/v1/webhooks", "/api/v1/webhooks/{endpoint_id}"
    created = call("post", hooks, json={"url": LOOP, "filters": {"metadata": {"team": "infra"}}}).get_json()["data"]
    path = hook.replace("{endpoint_id}", created["id"])
    call("post", hooks, json={"url": "ftp://x"})  # 422
    call("get", hooks)
    call("get", hook, path)
    call("get", hook, hook.replace("{endpoint_id}", "nope"))  # 404
    call("patch", hook, path, json={"description": None, "events": ["run.queued"]})
    call("post", "/api/v1/webhooks/{endpoint_id}/rotate-secret", f"{path}/rotate-secret")
    run = client.post("/api/v1/agent-runs", json={"target_id": local_device["id"], "prompt": "p",
                                                  "metadata": {"team": "infra"}}, headers=auth).get_json()["data"]
    assert run["webhook_url"] is None
    log = call("get", "/api/v1/webhooks/{endpoint_id}/deliveries", f"{path}/deliveries",
               query_string={"limit": 1}).get_json()["data"]
    assert [d["event_type"] for d in log] == ["run.queued"]
    call("get", "/api/v1/webhooks/{endpoint_id}/deliveries", f"{path}/deliveries", query_string={"cursor": "x"})  # 422
    redeliver = "/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
    call("post", redeliver, f"{path}/deliveries/{uuid.uuid4()}/redeliver")  # 404
    call("delete", hook, hook.replace("{endpoint_id}", "per-run"))  # 404 (none yet)
    assert call("delete", hook, path).status_code == 204
