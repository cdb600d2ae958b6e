"""Idempotency-Key: replay, reuse with another body, in-progress, expiry, per-tenant scope."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select, text

from tests.conftest import make_key


def _post(client, auth, body, key):
    return client.post("/api/v1/agent-runs", json=body, headers={**auth, "Idempotency-Key": key})


def _count_runs(client, auth):
    return len(client.get("/api/v1/agent-runs?limit=100", headers=auth).get_json()["data"])


def test_replay_returns_the_same_run(client, auth, local_device):
    body = {"prompt": "once", "sandbox_id": "box-1", "metadata": {"a": 1}}
    first = _post(client, auth, body, "k-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # Key order in the JSON body does not matter.
    second = _post(client, auth, {"metadata": {"a": 1}, "sandbox_id": "box-1", "prompt": "once"}, "k-1")
    assert second.status_code == 200 and second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["data"]["id"] == first.get_json()["data"]["id"]
    assert _count_runs(client, auth) == 1


def test_reuse_with_a_different_body_is_422(client, auth, local_device):
    _post(client, auth, {"prompt": "one", "sandbox_id": "box-1"}, "k-2")
    resp = _post(client, auth, {"prompt": "two", "sandbox_id": "box-1"}, "k-2")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "idempotency_key_reused"
    assert _count_runs(client, auth) == 1


def test_keys_are_scoped_per_tenant(client, auth, local_device):
    body = {"prompt": "x", "sandbox_id": "box-1"}
    _post(client, auth, body, "shared-key")
    other = {"Authorization": f"Bearer {make_key()[1]}"}
    client.post("/api/v1/devices", json={"id": "box-1", "kind": "sandbox", "driver": "local"}, headers=other)
    resp = _post(client, other, body, "shared-key")
    assert resp.status_code == 201


def test_key_validation(client, auth, local_device):
    body = {"prompt": "x", "sandbox_id": "box-1"}
    assert _post(client, auth, body, "k" * 256).status_code == 422
    assert _post(client, auth, body, "k" * 255).status_code == 201
    # A rejected body never records the key: fixing the body with the same key works.
    assert _post(client, auth, {"prompt": "", "sandbox_id": "box-1"}, "fix-me").status_code == 422
    assert _post(client, auth, body, "fix-me").status_code == 201


def test_in_progress_key_waits_then_409(client, auth, local_device, redis_client):
    import hashlib

    from core import db
    from core.crypto import keyed_hash
    from core.models import ApiKey

    with db.session() as s:
        tenant_id = s.execute(select(ApiKey.tenant_id).where(
            ApiKey.key_hash == hashlib.sha256(auth["Authorization"][7:].encode()).hexdigest())).scalar_one()
    lock = f"agentruns:idem:{tenant_id}:{keyed_hash('', b'busy-key')}"
    redis_client.set(lock, "someone-else", px=10_000)
    try:
        resp = _post(client, auth, {"prompt": "x", "sandbox_id": "box-1"}, "busy-key")
    finally:
        redis_client.delete(lock)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "idempotency_key_in_use"
    assert resp.headers["Retry-After"] == "1"
    assert _post(client, auth, {"prompt": "x", "sandbox_id": "box-1"}, "busy-key").status_code == 201


def test_expired_key_creates_a_new_run_and_purge_removes_it(client, auth, local_device):
    from core import db
    from core.idempotency import purge_expired
    from core.models import IdempotencyKey

    body = {"prompt": "x", "sandbox_id": "box-1"}
    first = _post(client, auth, body, "old-key").get_json()["data"]["id"]
    with db.session() as s:
        s.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'old-key'"))
    second = _post(client, auth, body, "old-key")
    assert second.status_code == 201 and second.get_json()["data"]["id"] != first
    with db.session() as s:
        s.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'old-key'"))
        assert purge_expired(s) >= 1
        assert s.execute(select(func.count()).select_from(IdempotencyKey)
                         .where(IdempotencyKey.key == "old-key")).scalar_one() == 0


def test_concurrent_duplicates_in_threads_make_one_run(client, auth, local_device, app):
    from concurrent.futures import ThreadPoolExecutor

    key = f"race-{uuid.uuid4()}"
    body = {"prompt": "race", "sandbox_id": "box-1"}

    def hit(_):
        with app.test_client() as c:
            r = c.post("/api/v1/agent-runs", json=body, headers={**auth, "Idempotency-Key": key})
            return r.status_code, r.get_json()["data"]["id"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(hit, range(32)))
    assert {rid for _, rid in results} == {results[0][1]}
    assert sorted(code for code, _ in results).count(201) == 1
