"""Devices: create, read, patch, delete; secrets write-only and encrypted at rest."""
from __future__ import annotations

import pytest
from sqlalchemy import text

SSH = {"kind": "computer", "driver": "ssh", "host": "127.0.0.1", "port": 2222, "username": "dev",
       "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n",
       "host_key": "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
       "env": {"ANTHROPIC_API_KEY": "sk-very-secret"}, "labels": {"os": "linux"},
       "providers": {"codex": {"executable": "/opt/codex/bin/codex", "extra_args": ["-c", "x=1"],
                               "env": {"CODEX_HOME": "/secret/home"}}}}


def test_create_read_patch_delete(client, auth):
    resp = client.post("/api/v1/devices", json={"id": "pc-7", **SSH}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    dev = resp.get_json()["data"]
    text_out = resp.get_data(as_text=True)
    assert "SECRETKEYMATERIAL" not in text_out and "sk-very-secret" not in text_out and "/secret/home" not in text_out
    assert dev["has_private_key"] and not dev["has_password"]
    assert dev["env_names"] == ["ANTHROPIC_API_KEY"]
    assert dev["providers"]["codex"] == {"executable": "/opt/codex/bin/codex", "extra_args": ["-c", "x=1"],
                                         "env_names": ["CODEX_HOME"]}
    assert dev["max_concurrent_runs"] == 1 and dev["port"] == 2222 and dev["login_shell"] is True
    listed = client.get("/api/v1/devices", headers=auth).get_json()["data"]
    assert [d["id"] for d in listed] == ["pc-7"]
    patched = client.patch("/api/v1/devices/pc-7", json={"max_concurrent_runs": 4, "password": "pw"},
                           headers=auth).get_json()["data"]
    assert patched["max_concurrent_runs"] == 4 and patched["has_password"] and patched["has_private_key"]
    assert client.delete("/api/v1/devices/pc-7", headers=auth).status_code == 204
    assert client.get("/api/v1/devices/pc-7", headers=auth).status_code == 404


def test_secrets_are_encrypted_at_rest(client, auth):
    from core import db

    client.post("/api/v1/devices", json={"id": "enc-1", **SSH}, headers=auth)
    with db.engine().connect() as conn:
        blob = conn.execute(text("SELECT secrets_enc FROM devices WHERE id = 'enc-1'")).scalar_one()
        row = conn.execute(text("SELECT row_to_json(d)::text FROM devices d WHERE id = 'enc-1'")).scalar_one()
    assert b"SECRETKEYMATERIAL" not in bytes(blob) and "sk-very-secret" not in row


def test_generated_id_and_duplicates(client, auth):
    dev = client.post("/api/v1/devices", json={"kind": "sandbox", "driver": "local"}, headers=auth).get_json()["data"]
    assert len(dev["id"]) == 36
    client.post("/api/v1/devices", json={"id": "dup", "kind": "sandbox", "driver": "local"}, headers=auth)
    resp = client.post("/api/v1/devices", json={"id": "dup", "kind": "sandbox", "driver": "local"}, headers=auth)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "device_exists"


def test_validation(client, auth):
    cases = [({"kind": "sandbox", "driver": "ssh", "host": "h", "username": "u", "password": "p"}, "host_key"),
             ({"kind": "sandbox", "driver": "ssh", "host": "h", "username": "u", "host_key": "k"}, "private_key"),
             ({"kind": "sandbox", "driver": "ssh", "username": "u", "password": "p", "trust_on_first_use": True},
              "host"),
             ({"kind": "phone", "driver": "local"}, "kind"),
             ({"kind": "sandbox", "driver": "telnet"}, "driver"),
             ({"kind": "sandbox", "driver": "local", "port": 70000}, "port"),
             ({"kind": "sandbox", "driver": "local", "id": "bad id"}, "id"),
             ({"kind": "sandbox", "driver": "local", "default_cwd": "rel"}, "default_cwd"),
             ({"kind": "sandbox", "driver": "local", "env": {"A-B": "x"}}, "env"),
             ({"kind": "sandbox", "driver": "local", "providers": {"gpt": {}}}, "providers"),
             ({"kind": "sandbox", "driver": "local", "providers": {"codex": {"colour": "x"}}}, "providers"),
             ({"kind": "sandbox", "driver": "local", "max_concurrent_runs": 0}, "max_concurrent_runs"),
             ({"kind": "sandbox", "driver": "local", "secret": 1}, "secret")]
    for body, field in cases:
        resp = client.post("/api/v1/devices", json=body, headers=auth)
        assert resp.status_code == 422, (body, resp.get_json())
        names = resp.get_json()["error"]["details"]["fields"]
        assert any(n == field or n.startswith(field + ".") for n in names), (body, resp.get_json())
    ok = client.post("/api/v1/devices", json={"kind": "sandbox", "driver": "ssh", "host": "h", "username": "u",
                                              "password": "p", "trust_on_first_use": True}, headers=auth)
    assert ok.status_code == 201, ok.get_json()


def test_device_with_runs_in_flight_cannot_be_deleted(quiet_client, auth, local_device):
    client = quiet_client
    run = client.post("/api/v1/agent-runs", json={"prompt": "x", "sandbox_id": "box-1"},
                      headers=auth).get_json()["data"]
    resp = client.delete("/api/v1/devices/box-1", headers=auth)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "device_busy"
    client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)
    assert client.delete("/api/v1/devices/box-1", headers=auth).status_code == 204
    # The run record outlives its device.
    assert client.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).status_code == 200


def test_device_test_endpoint_reports_latency_and_pins_on_first_use(client, auth, sshd):
    base = {"kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
            "username": sshd.username, "private_key": sshd.private_key}
    client.post("/api/v1/devices", json={"id": "tofu", "trust_on_first_use": True, **base}, headers=auth)
    result = client.post("/api/v1/devices/tofu/test", headers=auth).get_json()["data"]
    assert result["ok"] is True and result["error"] is None and result["latency_ms"] > 0
    key_type, key_b64 = sshd.host_key.split()[-2:]
    assert result["host_key"].split()[-2:] == [key_type, key_b64]
    stored = client.get("/api/v1/devices/tofu", headers=auth).get_json()["data"]["host_key"]
    assert stored.split()[-2:] == [key_type, key_b64]
    client.post("/api/v1/devices", json={"id": "nokey", "host_key": sshd.host_key, **base,
                                         "private_key": SSH["private_key"]}, headers=auth)
    failed = client.post("/api/v1/devices/nokey/test", headers=auth).get_json()["data"]
    assert failed["ok"] is False and failed["error"]["code"] in ("auth_failed",), failed


def test_patch_providers_merges_per_provider(client, auth):
    from core import db
    from core.models import Device
    from core.services.device_config import load

    client.post("/api/v1/devices", json={"id": "prov", "kind": "sandbox", "driver": "local", "providers": {
        "codex": {"executable": "/opt/codex", "env": {"CODEX_HOME": "/c"}},
        "pi": {"executable": "/opt/pi", "env": {"PI_KEY": "secret-pi"}}}}, headers=auth)
    resp = client.patch("/api/v1/devices/prov", json={"providers": {"codex": {"executable": "/new/codex"},
                                                                     "hermes": {"extra_args": ["-v"]}}}, headers=auth)
    providers = resp.get_json()["data"]["providers"]
    assert providers == {"codex": {"executable": "/new/codex"}, "hermes": {"extra_args": ["-v"]},
                         "pi": {"executable": "/opt/pi", "env_names": ["PI_KEY"]}}
    client.patch("/api/v1/devices/prov", json={"providers": {"hermes": None}}, headers=auth)
    with db.session() as s:
        device = s.query(Device).filter_by(id="prov").one()
        cfg = load(device, client.application.extensions["settings"].secret_key, networks=None)
    assert set(cfg.providers) == {"codex", "pi"}
    assert cfg.provider_settings("pi").env == {"PI_KEY": "secret-pi"}
    assert cfg.provider_settings("codex").env == {}


@pytest.fixture(scope="module")
def strict_app(settings):
    """The API as deployed by default: no `local` devices (they run commands as the service itself)."""
    from dataclasses import replace

    from app import create_app

    return create_app(replace(settings, allow_local_devices=False))


def test_local_devices_need_the_operators_opt_in(strict_app, client, auth):
    strict = strict_app.test_client()
    resp = strict.post("/api/v1/devices", json={"id": "loc", "kind": "sandbox", "driver": "local"}, headers=auth)
    body = resp.get_json()["error"]
    assert resp.status_code == 422 and body["code"] == "validation_error"
    assert "AGENTRUNS_ALLOW_LOCAL_DEVICES" in body["details"]["fields"]["driver"][0]
    assert strict.get("/api/v1/devices/loc", headers=auth).status_code == 404

    assert strict.post("/api/v1/devices", json={**SSH, "id": "far"}, headers=auth).status_code == 201
    resp = strict.patch("/api/v1/devices/far", json={"driver": "local"}, headers=auth)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "validation_error"
    assert strict.get("/api/v1/devices/far", headers=auth).get_json()["data"]["driver"] == "ssh"

    # A local device made while the server allowed it is not run on the API's host by /test.
    made = client.post("/api/v1/devices", json={"id": "was-allowed", "kind": "sandbox", "driver": "local"},
                       headers=auth)
    assert made.status_code == 201
    tested = strict.post("/api/v1/devices/was-allowed/test", headers=auth).get_json()["data"]
    assert tested["ok"] is False and tested["error"]["code"] == "local_driver_disabled"
    # Its other fields can still be changed, also by a client that sends its driver back unchanged.
    assert strict.patch("/api/v1/devices/was-allowed", json={"name": "old box"}, headers=auth).status_code == 200
    resp = strict.patch("/api/v1/devices/was-allowed", json={"name": "box", "driver": "local"}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
