"""API keys: roles, expiry, last use, the key management API (tenant-scoped), the operator's `agentruns keys`
commands, the operator-only decorator, and a revocation refused at once by two API processes."""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from agentruns.cli import main
from tests.conftest import make_key
from tests.test_api_fuzz_regressions import assert_error

KEYS = "/api/v1/keys"


def _bearer(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


def _env(settings) -> dict:
    return {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "AGENTRUNS_SECRET_KEY": settings.secret_key}


def _cli(settings, *argv: str):
    out = CliRunner().invoke(main, list(argv), env=_env(settings))
    return out


def _operator_key(settings, tenant: str) -> dict:
    out = _cli(settings, "keys", "create", "--tenant", tenant, "--role", "operator", "--name", "ops", "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def _sql(statement: str, **params):
    from core import db

    with db.transaction() as conn:
        return conn.execute(text(statement), params)


def test_create_list_and_get_never_show_a_secret(client, auth, api_key):
    created = client.post(KEYS, json={"name": "ci", "expires_in_days": 7}, headers=auth)
    assert created.status_code == 201, created.get_json()
    new = created.get_json()["data"]
    assert new["key"].startswith(new["prefix"]) and new["name"] == "ci" and new["role"] == "tenant"
    assert created.headers["Location"] == f"{KEYS}/{new['prefix']}"
    expires = datetime.fromisoformat(new["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)
    assert (new["state"], new["current"], new["last_used_at"], new["revoked_at"]) == ("active", False, None, None)

    listed = client.get(KEYS, headers=auth)
    body = listed.get_data(as_text=True)
    rows = listed.get_json()["data"]
    assert [r["prefix"] for r in rows] == [new["prefix"], api_key[:17]]  # newest first
    assert [r["current"] for r in rows] == [False, True]
    assert rows[1]["last_used_at"] is not None  # this very request used it
    for raw in (new["key"], api_key):  # neither a key nor its hash is ever listed
        assert raw not in body and hashlib.sha256(raw.encode()).hexdigest() not in body
    assert all("key" not in r and "key_hash" not in r for r in rows)
    one = client.get(f"{KEYS}/{new['prefix']}", headers=auth).get_json()["data"]
    assert one == {**rows[0], "current": False} and "key" not in one
    # The new key works, and its first use is recorded.
    assert client.get(KEYS, headers=_bearer(new["key"])).status_code == 200
    assert client.get(f"{KEYS}/{new['prefix']}", headers=auth).get_json()["data"]["last_used_at"] is not None


def test_create_validates_its_body(client, auth):
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert_error(client.post(KEYS, json={"expires_at": past}, headers=auth), 422, "validation_error", "expires_at")
    both = {"expires_in_days": 1, "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    assert_error(client.post(KEYS, json=both, headers=auth), 422, "validation_error", "expires_at")
    assert_error(client.post(KEYS, json={"expires_at": "2099-01-01T00:00:00"}, headers=auth),  # no offset
                 422, "validation_error", "expires_at")
    assert_error(client.post(KEYS, json={"expires_in_days": 0}, headers=auth), 422, "validation_error",
                 "expires_in_days")
    assert_error(client.post(KEYS, json={"expires_at": "9999-12-31T23:59:59-01:00"}, headers=auth),  # year 10000 UTC
                 422, "validation_error", "expires_at")
    assert_error(client.post(KEYS, json={"role": "root"}, headers=auth), 422, "validation_error", "role")
    assert_error(client.post(KEYS, json={"key": "ark_live_mine"}, headers=auth), 422, "validation_error", "key")
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    created = client.post(KEYS, json={"expires_at": at.isoformat()}, headers=auth)
    assert created.status_code == 201 and datetime.fromisoformat(created.get_json()["data"]["expires_at"]) == at


def test_an_expired_key_is_refused(client, auth):
    new = client.post(KEYS, json={"expires_in_days": 1}, headers=auth).get_json()["data"]
    assert client.get(KEYS, headers=_bearer(new["key"])).status_code == 200
    _sql("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE prefix = :p", p=new["prefix"])
    body = assert_error(client.get(KEYS, headers=_bearer(new["key"])), 401, "unauthorized")
    assert "expired" in body["error"]["message"]
    row = next(r for r in client.get(KEYS, headers=auth).get_json()["data"] if r["prefix"] == new["prefix"])
    assert row["state"] == "expired"
    # An expired key cannot be rotated into a live one: create a new key instead.
    assert_error(client.post(f"{KEYS}/{new['prefix']}/rotate", headers=auth), 409, "key_expired")


def test_last_used_at_is_written_at_most_once_a_minute(client, auth, api_key):
    prefix = api_key[:17]
    client.get(KEYS, headers=auth)
    (first,) = _sql("SELECT last_used_at FROM api_keys WHERE prefix = :p", p=prefix).one()
    assert first is not None
    for _ in range(3):
        client.get(KEYS, headers=auth)
    assert _sql("SELECT last_used_at FROM api_keys WHERE prefix = :p", p=prefix).scalar_one() == first
    _sql("UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE prefix = :p", p=prefix)
    client.get(KEYS, headers=auth)
    assert _sql("SELECT last_used_at FROM api_keys WHERE prefix = :p", p=prefix).scalar_one() > first


def test_revoke_and_rotate(client, auth):
    spare = client.post(KEYS, json={"name": "deploy", "expires_in_days": 30}, headers=auth).get_json()["data"]
    rotated = client.post(f"{KEYS}/{spare['prefix']}/rotate", headers=auth)
    assert rotated.status_code == 201, rotated.get_json()
    new = rotated.get_json()["data"]
    assert new["prefix"] != spare["prefix"] and rotated.headers["Location"] == f"{KEYS}/{new['prefix']}"
    assert (new["name"], new["role"], new["expires_at"]) == ("deploy", "tenant", spare["expires_at"])
    assert_error(client.get(KEYS, headers=_bearer(spare["key"])), 401, "unauthorized")
    assert client.get(KEYS, headers=_bearer(new["key"])).status_code == 200
    old = client.get(f"{KEYS}/{spare['prefix']}", headers=auth).get_json()["data"]
    assert old["state"] == "revoked" and old["revoked_at"] is not None
    assert_error(client.post(f"{KEYS}/{spare['prefix']}/rotate", headers=auth), 409, "key_revoked")

    # Revoke: at once, and revoking again changes nothing.
    revoked = client.post(f"{KEYS}/{new['prefix']}/revoke", headers=auth)
    assert revoked.status_code == 200 and revoked.get_json()["data"]["state"] == "revoked"
    body = assert_error(client.get(KEYS, headers=_bearer(new["key"])), 401, "unauthorized")
    assert "revoked" in body["error"]["message"]
    again = client.post(f"{KEYS}/{new['prefix']}/revoke", headers=auth).get_json()["data"]
    assert again["revoked_at"] == revoked.get_json()["data"]["revoked_at"]
    assert_error(client.post(f"{KEYS}/ark_live_nothere/revoke", headers=auth), 404, "not_found")


def test_a_key_can_rotate_and_revoke_itself(client):
    _, raw = make_key()
    prefix = raw[:17]
    rotated = client.post(f"{KEYS}/{prefix}/rotate", headers=_bearer(raw)).get_json()["data"]
    assert_error(client.get(KEYS, headers=_bearer(raw)), 401, "unauthorized")
    mine = client.post(f"{KEYS}/{rotated['prefix']}/revoke", headers=_bearer(rotated["key"]))
    assert mine.status_code == 200 and mine.get_json()["data"]["current"] is True
    assert_error(client.get(KEYS, headers=_bearer(rotated["key"])), 401, "unauthorized")


def test_a_tenant_sees_and_manages_only_its_own_keys(client, auth):
    _, other = make_key()
    theirs = other[:17]
    mine = {r["prefix"] for r in client.get(KEYS, headers=auth).get_json()["data"]}
    assert theirs not in mine
    for method, path in (("GET", f"{KEYS}/{theirs}"), ("POST", f"{KEYS}/{theirs}/revoke"),
                         ("POST", f"{KEYS}/{theirs}/rotate")):
        assert_error(client.open(path, method=method, headers=auth), 404, "not_found")
    assert client.get(KEYS, headers=_bearer(other)).status_code == 200  # untouched


def test_tenant_keys_cannot_make_or_touch_operator_keys(client, settings):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    op = _operator_key(settings, tenant)
    _, raw = make_key(tenant)
    assert_error(client.post(KEYS, json={"role": "operator"}, headers=_bearer(raw)), 403, "forbidden")
    assert_error(client.post(KEYS, json={"role": "operator"}, headers=_bearer(op["key"])), 403, "forbidden")
    for action in ("revoke", "rotate"):
        assert_error(client.post(f"{KEYS}/{op['prefix']}/{action}", headers=_bearer(raw)), 403, "forbidden")
    listed = {r["prefix"]: r for r in client.get(KEYS, headers=_bearer(raw)).get_json()["data"]}
    assert listed[op["prefix"]]["role"] == "operator" and listed[op["prefix"]]["name"] == "ops"
    # An operator key manages its tenant's keys, itself included.
    rotated = client.post(f"{KEYS}/{op['prefix']}/rotate", headers=_bearer(op["key"])).get_json()["data"]
    assert rotated["role"] == "operator"
    assert client.post(f"{KEYS}/{raw[:17]}/revoke", headers=_bearer(rotated["key"])).status_code == 200


def test_operator_required_answers_403_to_a_tenant_key(settings):
    from flask import g

    from app import create_app
    from app.api.parser import Blueprint
    from app.auth import operator_required

    app = create_app(settings)
    blp = Blueprint("ops-test", __name__, url_prefix="/api/v1", description="test")

    @blp.route("/ops-test", methods=["GET"])
    @operator_required
    @blp.response(200)
    def ops_test():
        return {"tenant": str(g.tenant_id), "role": g.key_role}

    app.extensions["agentruns_api"].register_blueprint(blp)
    client = app.test_client()
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    op = _operator_key(settings, tenant)
    _, raw = make_key(tenant)
    ok = client.get("/api/v1/ops-test", headers=_bearer(op["key"]))
    assert ok.status_code == 200 and ok.get_json()["role"] == "operator", ok.get_json()
    body = assert_error(client.get("/api/v1/ops-test", headers=_bearer(raw)), 403, "forbidden")
    assert "operator" in body["error"]["message"]
    assert_error(client.get("/api/v1/ops-test"), 401, "unauthorized")
    _sql("UPDATE api_keys SET revoked_at = now() WHERE prefix = :p", p=op["prefix"])
    assert_error(client.get("/api/v1/ops-test", headers=_bearer(op["key"])), 401, "unauthorized")
    spec = client.get("/api/v1/openapi.json").get_json()
    assert "403" in spec["paths"]["/api/v1/ops-test"]["get"]["responses"]


def test_operator_cli_create_list_rotate_revoke(client, settings):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    out = _cli(settings, "keys", "create", "--tenant", tenant, "--name", "bot", "--expires-in-days", "3", "--json")
    assert out.exit_code == 0, out.output
    created = json.loads(out.output)
    assert (created["tenant"], created["name"], created["role"]) == (tenant, "bot", "tenant")
    assert created["expires_at"] and created["key"].startswith(created["prefix"])
    assert client.get(KEYS, headers=_bearer(created["key"])).status_code == 200

    listed = _cli(settings, "keys", "list", "--tenant", tenant, "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)["data"]
    assert (row["tenant"], row["prefix"], row["name"], row["role"], row["state"]) == (
        tenant, created["prefix"], "bot", "tenant", "active")
    assert row["last_used_at"] is not None and created["key"] not in listed.output
    table = _cli(settings, "keys", "list", "--tenant", tenant)
    assert table.output.splitlines()[0].split() == ["TENANT", "PREFIX", "NAME", "ROLE", "STATE", "CREATED",
                                                     "LAST", "USED", "EXPIRES"]
    assert created["prefix"] in table.output and created["key"] not in table.output
    assert _cli(settings, "keys", "list", "--tenant", "no-such-tenant").exit_code == 1

    rotated = _cli(settings, "keys", "rotate", created["prefix"], "--json")
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.output)
    assert new["tenant"] == tenant and new["revoked"] == created["prefix"]
    assert client.get(KEYS, headers=_bearer(created["key"])).status_code == 401
    assert client.get(KEYS, headers=_bearer(new["key"])).status_code == 200
    again = _cli(settings, "keys", "rotate", created["prefix"])
    assert again.exit_code == 1 and "revoked" in again.output
    assert _cli(settings, "keys", "revoke", new["prefix"]).exit_code == 0
    assert client.get(KEYS, headers=_bearer(new["key"])).status_code == 401
    final = json.loads(_cli(settings, "keys", "list", "--tenant", tenant, "--json").output)["data"]
    assert [r["state"] for r in final] == ["revoked", "revoked"]


@pytest.fixture(scope="module")
def two_apis(e2e_env, app):
    from tests.sshd import free_port
    from tests.stack import start_api

    ports = [free_port(), free_port()]
    procs = []
    try:
        for i, port in enumerate(ports):
            procs.append(start_api(e2e_env, port, workers=2, name=f"keys-api{i}"))
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for p in procs:
            p.stop()


def test_a_revoked_key_is_refused_at_once_by_two_api_processes(two_apis):
    _, admin = make_key()
    with httpx.Client(timeout=10) as http:
        new = http.post(f"{two_apis[0]}{KEYS}", json={"name": "leaked"}, headers=_bearer(admin)).json()["data"]
        # Each API has two gunicorn workers: ask several times so that every worker has seen the key.
        for base in two_apis:
            assert {http.get(f"{base}{KEYS}", headers=_bearer(new["key"])).status_code for _ in range(6)} == {200}
        revoked = http.post(f"{two_apis[1]}{KEYS}/{new['prefix']}/revoke", headers=_bearer(admin))
        assert revoked.status_code == 200, revoked.text
        for base in two_apis:  # no cache anywhere: the very next request is refused
            codes = {http.get(f"{base}{KEYS}", headers=_bearer(new["key"])).status_code for _ in range(6)}
            assert codes == {401}, (base, codes)
        # A rotation likewise: the old key is refused everywhere, the new one accepted everywhere.
        rotated = http.post(f"{two_apis[0]}{KEYS}/{admin[:17]}/rotate", headers=_bearer(admin)).json()["data"]
        for base in two_apis:
            assert {http.get(f"{base}{KEYS}", headers=_bearer(admin)).status_code for _ in range(4)} == {401}
            assert {http.get(f"{base}{KEYS}", headers=_bearer(rotated["key"])).status_code for _ in range(4)} == {200}


def test_sdk_and_client_cli_manage_keys(two_apis, settings):
    import asyncio

    from agentruns.client import Client, PermissionDenied, Unauthorized
    from agentruns.client_async import AsyncClient

    tenant = f"t-{uuid.uuid4().hex[:10]}"
    _, raw = make_key(tenant)
    op = _operator_key(settings, tenant)
    url = two_apis[0]
    with Client(url, raw) as client:
        new = client.keys.create(name="sdk", expires_in_days=5)
        assert new["key"].startswith(new["prefix"]) and new["name"] == "sdk"
        assert client.keys.get(new["prefix"])["state"] == "active"
        rotated = client.keys.rotate(new["prefix"])
        assert rotated["name"] == "sdk" and rotated["expires_at"] == new["expires_at"]
        assert client.keys.revoke(rotated["prefix"])["state"] == "revoked"
        with pytest.raises(PermissionDenied):
            client.keys.revoke(op["prefix"])
        listed = {k["prefix"]: k for k in client.keys.list()}
        assert listed[raw[:17]]["current"] and listed[new["prefix"]]["state"] == "revoked"

    async def use_async() -> dict:
        async with AsyncClient(url, raw) as client:
            made = await client.keys.create(name="async")
            assert made["prefix"] in {k["prefix"] for k in await client.keys.list()}
            return await client.keys.revoke(made["prefix"])

    assert asyncio.run(use_async())["state"] == "revoked"

    def cli(*argv: str):
        return CliRunner().invoke(main, ["api-keys", *argv, "--api-url", url], env={"AGENTRUNS_API_KEY": raw})

    created = cli("create", "--name", "cli", "--expires-in-days", "2")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("ark_live_") and "shown only once" in created.stderr
    table = cli("list")
    assert table.exit_code == 0 and f"* {raw[:17]}" in table.stdout and key[:17] in table.stdout
    assert key not in table.stdout
    as_json = json.loads(cli("list", "--json").stdout)["data"]
    assert {k["prefix"] for k in as_json} >= {raw[:17], key[:17], op["prefix"]}
    rotated_out = cli("rotate", key[:17], "--json")
    assert rotated_out.exit_code == 0, rotated_out.output
    new_key = json.loads(rotated_out.stdout)["key"]
    assert cli("revoke", new_key[:17]).stdout.strip() == f"revoked {new_key[:17]}"
    refused = cli("revoke", op["prefix"])
    assert refused.exit_code == 1 and "code: forbidden · HTTP 403" in refused.stderr
    with Client(url, new_key) as client, pytest.raises(Unauthorized):
        client.keys.list()


def test_the_console_refuses_an_expired_key_and_ends_its_sessions(app, auth):
    from tests.test_console_pages import sign_in

    browser = app.test_client()
    raw = app.test_client().post(KEYS, json={"expires_in_days": 1}, headers=auth).get_json()["data"]["key"]
    assert sign_in(browser, raw).status_code == 302
    assert browser.get("/runs").status_code == 200
    _sql("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE prefix = :p", p=raw[:17])
    assert browser.get("/runs").status_code == 302  # back to sign-in: the session's key has expired
    assert sign_in(app.test_client(), raw).status_code == 401
