"""Operator commands: `agentruns keys ...` and `agentruns db upgrade` against the test database."""
from __future__ import annotations

import json

from click.testing import CliRunner

from agentruns.cli import main


def _env(settings):
    return {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "AGENTRUNS_SECRET_KEY": settings.secret_key}


def test_keys_create_and_revoke(client, settings):
    runner = CliRunner()
    out = runner.invoke(main, ["keys", "create", "--tenant", "ops-tenant", "--json"], env=_env(settings))
    assert out.exit_code == 0, out.output
    created = json.loads(out.output)
    assert created["tenant"] == "ops-tenant" and created["key"].startswith("ark_live_")
    assert created["key"].startswith(created["prefix"]) and len(created["prefix"]) < len(created["key"])
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/api/v1/agent-runs", headers=headers).status_code == 200
    out = runner.invoke(main, ["keys", "revoke", created["prefix"]], env=_env(settings))
    assert out.exit_code == 0 and "revoked" in out.output
    assert client.get("/api/v1/agent-runs", headers=headers).status_code == 401
    again = runner.invoke(main, ["keys", "revoke", created["prefix"]], env=_env(settings))
    assert again.exit_code == 1 and "no live key" in again.output


def test_db_upgrade_is_idempotent(settings, app):
    out = CliRunner().invoke(main, ["db", "upgrade"], env=_env(settings))
    assert out.exit_code == 0 and "database at head" in out.output, out.output


def test_gen_secret_prints_a_usable_key():
    from core.crypto import decrypt_json, encrypt_json

    key = CliRunner().invoke(main, ["keys", "gen-secret"]).output.strip()
    assert decrypt_json(key, encrypt_json(key, {"a": 1})) == {"a": 1}
