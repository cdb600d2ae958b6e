"""Interrupted runs read `canceled` (the seed: "the run was canceled or interrupted"), with the cause
in error.code; `failed` stays for a runtime's non-zero exit or a backend error (issue #12)."""
from __future__ import annotations

import json

import psycopg
import pytest

from providers import ParsedResult


@pytest.mark.unit
@pytest.mark.parametrize(("killed", "stop_reason", "expected"), [
    (None, "worker_shutdown", ("canceled", "worker_shutdown")),
    ("canceled", None, ("canceled", "canceled")),
    ("timeout", None, ("failed", "timeout")),
])
def test_the_outcome_of_a_stopped_run(killed, stop_reason, expected):
    from workers.runner import _outcome

    status, error = _outcome(killed, stop_reason, ParsedResult(succeeded=False, output=""), 60)
    assert (status, error and error["code"]) == expected


def test_migration_0005_turns_interrupted_failures_into_cancellations(pg_server_url):
    from core.migrate import upgrade
    from tests.conftest import new_database

    url, plain, _ = new_database(pg_server_url, "agentruns_m5")
    upgrade(url, "0004")
    codes = {"lost": "worker_lost", "shutdown": "worker_shutdown", "exit": "nonzero_exit"}
    with psycopg.connect(plain, autocommit=True) as conn:
        tenant = conn.execute("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't') RETURNING id").fetchone()
        for key, code in codes.items():
            error = json.dumps({"code": code, "message": key})
            conn.execute(
                "INSERT INTO runs (id, tenant_id, target_kind, target_id, provider, prompt, cwd, timeout, metadata, "
                "status, epoch, stdout_truncated, stderr_truncated, error) VALUES (gen_random_uuid(), %s, "
                "'sandbox', 'b', 'custom', %s, '/', 60, '{}', 'failed', 1, false, false, %s)", (tenant[0], key, error))
            conn.execute(
                "INSERT INTO run_events (run_id, type, data) SELECT id, 'status', %s FROM runs WHERE prompt = %s",
                (json.dumps({"status": "failed", "error": {"code": code}}), key))
    upgrade(url)
    with psycopg.connect(plain) as conn:
        rows = dict(conn.execute("SELECT prompt, status FROM runs").fetchall())
        events = dict(conn.execute(
            "SELECT r.prompt, e.data FROM run_events e JOIN runs r ON r.id = e.run_id").fetchall())
    assert rows == {"lost": "canceled", "shutdown": "canceled", "exit": "failed"}
    assert {k: json.loads(v)["status"] for k, v in events.items()} == rows
