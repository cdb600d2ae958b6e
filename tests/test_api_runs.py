"""The agent-runs REST contract against real PostgreSQL and Redis (no worker: runs stay queued)."""
from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import make_key

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
RUN_FIELDS = {"id", "target_kind", "target_id", "provider", "prompt", "status", "output", "stderr", "exit_code",
              "metadata", "started_at", "finished_at", "created_at", "updated_at", "model", "cwd", "timeout",
              "command", "error", "request_id"}


def _tenant_of(s, run: dict):
    from core.models import Run

    return s.get(Run, uuid.UUID(run["id"])).tenant_id


def post_run(client, auth, body, **headers):
    return client.post("/api/v1/agent-runs", json=body, headers={**auth, **headers})


def test_create_returns_the_full_run(client, auth, local_device, tmp_path):
    resp = post_run(client, auth, {"prompt": "hello", "sandbox_id": "box-1", "provider": "custom",
                                   "command": "cat", "metadata": {"ticket": "T-1"}}, **{"X-Request-Id": "req-abc"})
    assert resp.status_code == 201, resp.get_json()
    run = resp.get_json()["data"]
    assert RUN_FIELDS <= set(run)
    assert run["status"] == "queued"
    assert run["target_kind"] == "sandbox" and run["target_id"] == "box-1"
    assert run["provider"] == "custom" and run["command"] == "cat"
    assert run["cwd"] == str(tmp_path)  # the device's default_cwd
    assert run["timeout"] == 1800
    assert run["metadata"] == {"ticket": "T-1"}
    assert run["error"] is None and run["output"] is None and run["exit_code"] is None
    assert run["request_id"] == "req-abc"
    assert resp.headers["X-Request-Id"] == "req-abc"
    assert RFC3339_Z.match(run["created_at"]) and RFC3339_Z.match(run["updated_at"])
    assert resp.headers["Location"] == f"/api/v1/agent-runs/{run['id']}"
    got = client.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).get_json()["data"]
    assert got["id"] == run["id"] and got["prompt"] == "hello"
    assert "env" not in got and "env_enc" not in got


def test_defaults_and_aliases(client, auth, local_device):
    run = post_run(client, auth, {"prompt": "x", "target_id": "box-1"}).get_json()["data"]
    assert run["provider"] == "claude-code" and run["target_kind"] == "sandbox"
    run = post_run(client, auth, {"prompt": "x", "target_id": "box-1", "provider": "claude"}).get_json()["data"]
    assert run["provider"] == "claude"
    run = post_run(client, auth, {"prompt": "x", "target_id": "box-1", "provider": "custom",
                                  "runtime_command": "echo hi"}).get_json()["data"]
    assert run["command"] == "echo hi"


@pytest.mark.parametrize("body, field", [
    ({"sandbox_id": "box-1"}, "prompt"),
    ({"prompt": "", "sandbox_id": "box-1"}, "prompt"),
    ({"prompt": "   ", "sandbox_id": "box-1"}, "prompt"),
    ({"prompt": "x" * 100_001, "sandbox_id": "box-1"}, "prompt"),
    ({"prompt": 5, "sandbox_id": "box-1"}, "prompt"),
    ({"prompt": "x"}, "target_id"),
    ({"prompt": "x", "target_id": "box-1", "sandbox_id": "other"}, "target_id"),
    ({"prompt": "x", "sandbox_id": "box-1", "target_kind": "computer"}, "target_kind"),
    ({"prompt": "x", "target_id": "box-1", "target_kind": "computer"}, "target_kind"),
    ({"prompt": "x", "target_id": "box-1", "target_kind": "phone"}, "target_kind"),
    ({"prompt": "x", "target_id": "nope"}, "target_id"),
    ({"prompt": "x", "computer_id": "box-1"}, "target_kind"),
    ({"prompt": "x", "sandbox_id": "box-1", "provider": "gpt"}, "provider"),
    ({"prompt": "x", "sandbox_id": "box-1", "provider": "custom"}, "command"),
    ({"prompt": "x", "sandbox_id": "box-1", "provider": "codex", "command": "ls"}, "command"),
    ({"prompt": "x", "sandbox_id": "box-1", "model": "a b"}, "model"),
    ({"prompt": "x", "sandbox_id": "box-1", "model": "m" * 201}, "model"),
    ({"prompt": "x", "sandbox_id": "box-1", "cwd": "relative/path"}, "cwd"),
    ({"prompt": "x", "sandbox_id": "box-1", "cwd": "/a\u0000b"}, "cwd"),
    ({"prompt": "x", "sandbox_id": "box-1", "cwd": "/" + "a" * 4096}, "cwd"),
    ({"prompt": "x", "sandbox_id": "box-1", "timeout": 0}, "timeout"),
    ({"prompt": "x", "sandbox_id": "box-1", "timeout": 86401}, "timeout"),
    ({"prompt": "x", "sandbox_id": "box-1", "timeout": "60"}, "timeout"),
    ({"prompt": "x", "sandbox_id": "box-1", "timeout": 1.5}, "timeout"),
    ({"prompt": "x", "sandbox_id": "box-1", "metadata": {f"k{i}": i for i in range(51)}}, "metadata"),
    ({"prompt": "x", "sandbox_id": "box-1", "metadata": {"k" * 41: 1}}, "metadata"),
    ({"prompt": "x", "sandbox_id": "box-1", "metadata": {"big": "v" * 17000}}, "metadata"),
    ({"prompt": "x", "sandbox_id": "box-1", "metadata": ["not", "an", "object"]}, "metadata"),
    ({"prompt": "x", "sandbox_id": "box-1", "wait": "soon"}, "wait"),
    ({"prompt": "x", "sandbox_id": "box-1", "env": {"1BAD": "v"}}, "env"),
    ({"prompt": "x", "sandbox_id": "box-1", "env": {"GOOD": 1}}, "env"),
    ({"prompt": "x", "sandbox_id": "box-1", "surprise": True}, "surprise"),
])
def test_rejected_fields(client, auth, local_device, body, field):
    resp = post_run(client, auth, body)
    assert resp.status_code == 422, resp.get_json()
    err = resp.get_json()["error"]
    assert err["code"] == "validation_error"
    assert field in err["details"]["fields"], err
    assert field in err["message"]


def test_accepted_edges(client, auth, local_device):
    body = {"prompt": "x" * 100_000, "sandbox_id": "box-1", "model": "claude-opus-4@2025/v1:x_y.z",
            "cwd": "/srv/work dir", "timeout": 86400, "metadata": {f"k{i}": i for i in range(50)},
            "env": {"API_TOKEN": "s3cret", "_X": ""}, "wait": False}
    resp = post_run(client, auth, body)
    assert resp.status_code == 201, resp.get_json()
    run = resp.get_json()["data"]
    assert run["timeout"] == 86400 and run["cwd"] == "/srv/work dir"
    assert "s3cret" not in resp.get_data(as_text=True)


def test_error_format_for_protocol_errors(client, auth, local_device):
    resp = client.post("/api/v1/agent-runs", data="{not json", headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_json"
    resp = client.post("/api/v1/agent-runs", data="prompt=x", headers={**auth, "Content-Type": "text/plain"})
    assert resp.status_code == 415 and resp.get_json()["error"]["code"] == "unsupported_media_type"
    resp = client.delete("/api/v1/agent-runs", headers=auth)
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"
    resp = client.post("/api/v1/agent-runs", data=b"x" * (3 * 1024 * 1024),
                       headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"
    for resp in (client.get("/api/v1/agent-runs/not-a-uuid", headers=auth),
                 client.get(f"/api/v1/agent-runs/{uuid.uuid4()}", headers=auth)):
        body = resp.get_json()
        assert resp.status_code == 404 and body["error"]["code"] == "not_found"
        assert body["request_id"] == resp.headers["X-Request-Id"]


def test_auth_required(client, local_device):
    for headers in ({}, {"Authorization": "Bearer ark_live_wrong"}, {"Authorization": "Basic abc"}):
        resp = client.get("/api/v1/agent-runs", headers=headers)
        assert resp.status_code == 401
        assert resp.get_json()["error"]["code"] == "unauthorized"
    # Authentication comes before validation: an anonymous bad body is a 401, not a 422.
    assert client.post("/api/v1/agent-runs", json={}).status_code == 401


def test_revoked_key_is_refused(client, app):
    from core import db
    from core.services.keys import create_key, revoke_key

    with db.session() as s:
        _, raw, prefix = create_key(s, f"t-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {raw}"}
    assert client.get("/api/v1/agent-runs", headers=headers).status_code == 200
    with db.session() as s:
        assert revoke_key(s, prefix)
    assert client.get("/api/v1/agent-runs", headers=headers).status_code == 401


def test_tenant_isolation(client, auth, local_device):
    run = post_run(client, auth, {"prompt": "mine", "sandbox_id": "box-1"}).get_json()["data"]
    other = {"Authorization": f"Bearer {make_key()[1]}"}
    assert client.get(f"/api/v1/agent-runs/{run['id']}", headers=other).status_code == 404
    assert client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=other).status_code == 404
    assert client.get(f"/api/v1/agent-runs/{run['id']}/events", headers=other).status_code == 404
    assert client.get("/api/v1/agent-runs", headers=other).get_json()["data"] == []
    assert client.get("/api/v1/devices/box-1", headers=other).status_code == 404
    # Another tenant cannot target my device either.
    resp = post_run(client, other, {"prompt": "x", "sandbox_id": "box-1"})
    assert resp.status_code == 422 and "target_id" in resp.get_json()["error"]["details"]["fields"]


def test_cancel_queued_run(quiet_client, auth, local_device):
    client = quiet_client
    run = post_run(client, auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()["data"]
    resp = client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)
    assert resp.status_code == 200
    canceled = resp.get_json()["data"]
    assert canceled["status"] == "canceled" and canceled["error"]["code"] == "canceled"
    assert canceled["finished_at"] is not None
    again = client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)
    assert again.status_code == 200 and again.get_json()["data"]["finished_at"] == canceled["finished_at"]
    events = client.get(f"/api/v1/agent-runs/{run['id']}/events", headers=auth).get_json()["data"]
    assert [e["type"] for e in events] == ["status", "status"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_cancel_finished_run_is_conflict(quiet_client, auth, local_device):
    client = quiet_client
    from core import db, runstate

    run = post_run(client, auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()["data"]
    with db.session() as s:
        claimed = runstate.claim_next(s, _tenant_of(s, run), "box-1", "test-worker", 30)
        runstate.finish(s, claimed.id, claimed.epoch, "succeeded", output="done", exit_code=0)
    resp = client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "run_finished"


def test_get_wait_returns_when_terminal(quiet_client, auth, local_device):
    client = quiet_client
    import threading
    import time

    from core import db, runstate
    from core.notify import publish

    run = post_run(client, auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()["data"]

    def finish_soon():
        time.sleep(0.5)
        with db.session() as s:
            claimed = runstate.claim_next(s, _tenant_of(s, run), "box-1", "w", 30)
            runstate.finish(s, claimed.id, claimed.epoch, "succeeded", output="ok", exit_code=0)
        publish(client.application.extensions["redis"], run["id"])

    threading.Thread(target=finish_soon).start()
    started = time.monotonic()
    got = client.get(f"/api/v1/agent-runs/{run['id']}?wait=10", headers=auth).get_json()["data"]
    assert got["status"] == "succeeded" and got["output"] == "ok"
    assert time.monotonic() - started < 5
    started = time.monotonic()
    other = post_run(client, auth, {"prompt": "y", "sandbox_id": "box-1"}).get_json()["data"]
    got = client.get(f"/api/v1/agent-runs/{other['id']}?wait=1", headers=auth).get_json()["data"]
    assert got["status"] == "queued" and 0.9 < time.monotonic() - started < 4
    assert client.get(f"/api/v1/agent-runs/{other['id']}?wait=-1", headers=auth).status_code == 422


@pytest.mark.parametrize("body, field", [
    ({"prompt": "a\u0000b"}, "prompt"),
    ({"prompt": "x", "provider": "custom", "command": "echo \u0000"}, "command"),
    ({"prompt": "x", "metadata": {"k": "v\u0000"}}, "metadata"),
    ({"prompt": "x", "metadata": {"k": ["ok", {"deep": "\u0000"}]}}, "metadata"),
    ({"prompt": "é" * 70_000, "provider": "hermes"}, "prompt"),  # 70k chars, 140 KB: over the argv limit
])
def test_values_the_store_or_a_cli_cannot_take(client, auth, local_device, body, field):
    resp = post_run(client, auth, {"sandbox_id": "box-1", **body})
    assert resp.status_code == 422, resp.get_json()
    assert field in resp.get_json()["error"]["details"]["fields"]


def test_rate_limit_answers_429_with_retry_after(settings, auth):
    import time
    from dataclasses import replace

    from app import create_app

    limited = create_app(replace(settings, rate_limit_per_minute=3)).test_client()
    if time.time() % 60 > 57:  # the limiter counts per clock minute: don't straddle two
        time.sleep(60 - time.time() % 60 + 0.1)
    codes = [limited.get("/api/v1/agent-runs", headers=auth).status_code for _ in range(4)]
    resp = limited.get("/api/v1/agent-runs", headers=auth)
    assert codes == [200, 200, 200, 429] and resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("name", ["AGENTRUNS_PROMPT_FILE", "__agentruns_t"])
def test_reserved_env_names_are_refused(client, auth, local_device, name):
    resp = post_run(client, auth, {"prompt": "x", "sandbox_id": "box-1", "env": {name: "v"}})
    assert resp.status_code == 422
    body = resp.get_json()["error"]
    assert body["code"] == "validation_error" and "reserved" in str(body["details"])
