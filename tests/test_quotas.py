"""Per-tenant quotas: devices, runs in flight, runs per minute; 429 quota_exceeded with Retry-After, exact
under concurrent creates. No worker listens to these apps' Redis: their runs stay queued."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import text

from tests.conftest import make_key
from tests.test_api_fuzz_regressions import assert_error

RUNS = "/api/v1/agent-runs"
DEVICES = "/api/v1/devices"


@pytest.fixture()
def quota_client(settings, tmp_path):
    """make(**quotas) -> (a test client of an app with these quotas, auth headers of a new tenant with a device)."""
    from app import create_app

    base, _, _ = settings.redis_url.rpartition("/")

    def make(**quotas):
        app = create_app(replace(settings, redis_url=f"{base}/15", **quotas))
        client = app.test_client()
        auth = {"Authorization": f"Bearer {make_key()[1]}"}
        resp = client.post(DEVICES, json={"id": "box", "kind": "sandbox", "driver": "local",
                                          "default_cwd": str(tmp_path)}, headers=auth)
        assert resp.status_code == 201, resp.get_json()
        return client, auth

    return make


def _run(client, auth, **headers):
    return client.post(RUNS, json={"prompt": "x", "sandbox_id": "box", "provider": "custom", "command": "true"},
                       headers={**auth, **headers})


def _quota_error(resp, quota: str) -> int:
    body = assert_error(resp, 429, "quota_exceeded")
    assert body["error"]["details"]["quota"] == quota, body
    return int(resp.headers["Retry-After"])


def test_runs_in_flight(quota_client):
    client, auth = quota_client(quota_runs_in_flight=2)
    first = _run(client, auth, **{"Idempotency-Key": "a"})
    assert first.status_code == 201 and _run(client, auth).status_code == 201
    assert _quota_error(_run(client, auth), "runs_in_flight") >= 1
    # A replay creates nothing, so the quota does not refuse it.
    replay = _run(client, auth, **{"Idempotency-Key": "a"})
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    # A run that ends frees its slot.
    assert client.post(f"{RUNS}/{first.get_json()['data']['id']}/cancel", headers=auth).status_code == 200
    assert _run(client, auth).status_code == 201
    _quota_error(_run(client, auth), "runs_in_flight")
    # Another tenant has its own quota.
    other, other_auth = quota_client(quota_runs_in_flight=2)
    assert _run(other, other_auth).status_code == 201


def test_runs_per_minute_is_a_sliding_window(quota_client):
    from core import db

    client, auth = quota_client(quota_runs_per_minute=3)
    ids = [_run(client, auth).get_json()["data"]["id"] for _ in range(3)]
    for run_id in ids:  # ended runs still count: the quota is on creation
        client.post(f"{RUNS}/{run_id}/cancel", headers=auth)
    retry = _quota_error(_run(client, auth), "runs_per_minute")
    assert 55 <= retry <= 60, retry
    with db.transaction() as conn:  # the oldest run leaves the window: one slot frees, not three
        conn.execute(text("UPDATE runs SET created_at = created_at - interval '50 seconds' WHERE id = :id"),
                     {"id": ids[0]})
    assert _quota_error(_run(client, auth), "runs_per_minute") <= 11
    with db.transaction() as conn:
        conn.execute(text("UPDATE runs SET created_at = created_at - interval '11 seconds' WHERE id = :id"),
                     {"id": ids[0]})
    assert _run(client, auth).status_code == 201
    _quota_error(_run(client, auth), "runs_per_minute")


def test_devices(quota_client):
    client, auth = quota_client(quota_devices=2)  # the fixture made one
    body = {"kind": "sandbox", "driver": "local"}
    assert client.post(DEVICES, json={**body, "id": "second"}, headers=auth).status_code == 201
    assert _quota_error(client.post(DEVICES, json={**body, "id": "third"}, headers=auth), "devices") >= 1
    assert client.delete(f"{DEVICES}/second", headers=auth).status_code == 204
    assert client.post(DEVICES, json={**body, "id": "third"}, headers=auth).status_code == 201


def test_concurrent_creates_do_not_pass_the_quota_together(quota_client):
    client, auth = quota_client(quota_runs_in_flight=3)
    barrier = threading.Barrier(10)
    codes: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        barrier.wait()
        resp = _run(client, auth)
        with lock:
            codes.append(resp.status_code)

    threads = [threading.Thread(target=fire) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [201] * 3 + [429] * 7, codes


def test_no_quota_by_default_and_the_answer_matches_the_document(quota_client):
    from tests.test_openapi_spec import check_answer

    client, auth = quota_client()
    assert all(_run(client, auth).status_code == 201 for _ in range(5))
    limited, limited_auth = quota_client(quota_runs_in_flight=1)
    spec = limited.get("/api/v1/openapi.json").get_json()
    for _ in range(2):
        check_answer(spec, "post", RUNS, _run(limited, limited_auth))


def test_a_slow_webhook_lookup_does_not_hold_up_the_tenants_other_creates(quota_client, monkeypatch):
    """The quota lock is taken last: one request's DNS lookup of its webhook_url must not serialise the rest."""
    import threading

    client, auth = quota_client(quota_runs_in_flight=1000)
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "slow.example.test":
            time.sleep(2.0)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    slow_create = threading.Thread(target=lambda: client.post(RUNS, json={
        "prompt": "x", "sandbox_id": "box", "provider": "custom", "command": "true",
        "webhook_url": "https://slow.example.test/h"}, headers=auth))
    slow_create.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert _run(client, auth).status_code == 201
    assert time.monotonic() - started < 1.5
    slow_create.join()
