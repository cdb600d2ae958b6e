"""Device changes racing each other and run creation (found by an outside probe, issue #11): the
row lock decides, so an accepted run always has its device, and a lost race is a 404 or a 409, never
a 500 or a second 204. Each test holds one side's transaction open while the API serves the other."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.test_api_fuzz_regressions import assert_error


@pytest.fixture()
def tenant_id(client, auth, local_device):
    run = client.get("/api/v1/agent-runs?limit=1", headers=auth)  # authenticates the key
    assert run.status_code == 200
    from sqlalchemy import text

    from core import db

    with db.engine().connect() as conn:
        return conn.execute(text("SELECT tenant_id FROM devices WHERE id = 'box-1' ORDER BY created_at DESC "
                                 "LIMIT 1")).scalar_one()


def _in_thread(fn):
    """Start fn in a thread; returns (thread, result list)."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def _still_waiting(thread: threading.Thread) -> bool:
    thread.join(0.5)  # long enough for an unblocked request to finish on this machine
    return thread.is_alive()


def test_a_delete_racing_a_run_create_waits_and_refuses(client, auth, settings, tenant_id):
    from core import db
    from core.services import runs as run_service

    body = {"target_id": "box-1", "target_kind": None, "provider": "custom", "prompt": "x", "command": "true"}
    with db.transaction() as conn:  # the create, not yet committed
        run = run_service.create(conn, tenant_id, body, "req", settings)
        thread, answer = _in_thread(lambda: client.delete("/api/v1/devices/box-1", headers=auth))
        assert _still_waiting(thread), "the delete did not wait for the create's transaction"
    thread.join(10)
    assert_error(answer[0], 409, "device_busy")
    assert client.get(f"/api/v1/agent-runs/{run.id}", headers=auth).get_json()["data"]["target_id"] == "box-1"
    assert client.get("/api/v1/devices/box-1", headers=auth).status_code == 200


def test_a_run_create_racing_a_delete_finds_no_device(client, auth, tenant_id):
    from core import db
    from core.services import devices as device_service

    with db.session() as s:  # the delete, not yet committed
        device_service.delete(s, tenant_id, "box-1")
        s.flush()
        thread, answer = _in_thread(lambda: client.post("/api/v1/agent-runs", headers=auth, json={
            "prompt": "x", "sandbox_id": "box-1", "provider": "custom", "command": "true"}))
        assert _still_waiting(thread), "the create did not wait for the delete's transaction"
    thread.join(10)
    assert_error(answer[0], 422, "validation_error", "target_id")


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_a_change_racing_a_delete_is_a_404(client, auth, tenant_id, method):
    from core import db
    from core.services import devices as device_service

    with db.session() as s:
        device_service.delete(s, tenant_id, "box-1")
        s.flush()
        thread, answer = _in_thread(lambda: client.open("/api/v1/devices/box-1", method=method, headers=auth,
                                                        json={"name": "renamed"} if method == "PATCH" else None))
        assert _still_waiting(thread), f"the {method} did not wait for the delete's transaction"
    thread.join(10)
    assert_error(answer[0], 404, "not_found")


def test_the_locks_do_not_serialise_creates_on_one_device(client, auth, settings, tenant_id):
    """Creates take a shared (key-share) lock on the device: one open create does not block another."""
    from core import db
    from core.services import runs as run_service

    body = {"target_id": "box-1", "target_kind": None, "provider": "custom", "prompt": "x", "command": "true"}
    with db.transaction() as conn:
        run_service.create(conn, tenant_id, body, "req", settings)
        started = time.monotonic()
        thread, answer = _in_thread(lambda: client.post("/api/v1/agent-runs", headers=auth, json={
            "prompt": "y", "sandbox_id": "box-1", "provider": "custom", "command": "true"}))
        thread.join(10)
        assert not thread.is_alive() and answer[0].status_code == 201, time.monotonic() - started
    assert uuid.UUID(answer[0].get_json()["data"]["id"])
