"""Device blips wait (issue #11): a run whose device is away before its command starts goes back to
the queue and is tried again with backoff, for `device_retry_seconds` (3 s for the test worker)."""
from __future__ import annotations

import time
import uuid

import pytest

from drivers.base import AUTH_FAILED, CONNECTION_LOST, DEVICE_UNREACHABLE, DriverError
from tests.conftest import wait_run
from tests.test_e2e_runs import create
from workers.device_backoff import MAX_DELAY, DeviceBackoff, key, retryable


def _statuses(client, auth, run_id: str) -> list[str]:
    events = client.get(f"/api/v1/agent-runs/{run_id}/events", headers=auth).get_json()["data"]
    return [e["data"]["status"] for e in events if e["type"] == "status"]


def test_the_backoff_doubles_up_to_its_cap_and_ends_with_its_window(redis_client):
    tenant = uuid.uuid4()
    long = DeviceBackoff(redis_client, window_seconds=100, sender=None)
    assert [long.failed(tenant, "d") for _ in range(6)] == [1, 2, 4, 8, MAX_DELAY, MAX_DELAY]
    short = DeviceBackoff(redis_client, window_seconds=0.3, sender=None)
    assert short.failed(tenant, "e") == pytest.approx(0.3, abs=0.05)  # never past the window
    time.sleep(0.35)
    assert short.failed(tenant, "e") is None  # away for the whole window: the run fails


def test_a_delivery_leaves_a_device_alone_until_its_retry_is_due(redis_client):
    from workers.leases import BACKING_OFF, TAKEN_AFTER_BACKOFF, Leases, Slot, new_token, pending_key, slots_key

    tenant, leases = uuid.uuid4(), Leases(redis_client)
    slot = Slot(slots_key(tenant, "d"), new_token(), pending_key(tenant, "d"))
    assert leases.acquire_serving_slot(slot, 1, 5000, key(tenant, "d")) == 1  # no backoff record
    leases.release_slot(slot)
    backoff = DeviceBackoff(redis_client, window_seconds=100, sender=None)
    for _ in range(3):
        backoff.failed(tenant, "d")  # next try in 4 s
    assert leases.acquire_serving_slot(slot, 1, 5000, key(tenant, "d")) == BACKING_OFF
    redis_client.hset(key(tenant, "d"), "retry_at", 0)  # the retry is due
    assert leases.acquire_serving_slot(slot, 1, 5000, key(tenant, "d")) == TAKEN_AFTER_BACKOFF


@pytest.mark.unit
def test_only_failures_before_the_start_that_may_pass_are_retried():
    assert retryable(DriverError(DEVICE_UNREACHABLE, "refused", before_start=True))
    assert retryable(DriverError(CONNECTION_LOST, "exec failed", before_start=True))
    assert not retryable(DriverError(CONNECTION_LOST, "dropped mid-run", before_start=False, pgid=7))
    assert not retryable(DriverError(AUTH_FAILED, "wrong key", before_start=True))


def test_a_run_created_while_its_device_is_away_waits_and_succeeds(worker, client, auth, sshd):
    device = sshd.spawn()
    workdir = f"/tmp/agentruns-blip-{uuid.uuid4().hex[:8]}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    try:
        made = client.post("/api/v1/devices", headers=auth, json={
            "id": "blipping", "kind": "computer", "driver": "ssh", "host": device.host, "port": device.port,
            "username": device.username, "private_key": device.private_key, "host_key": device.host_key,
            "default_cwd": workdir})
        assert made.status_code == 201, made.get_json()
        device.cut()
        run = create(client, auth, prompt="p", computer_id="blipping", command="echo reached")
        deadline = time.monotonic() + 10
        while _statuses(client, auth, run["id"]).count("queued") < 2:  # tried, and given back to the queue
            assert time.monotonic() < deadline, _statuses(client, auth, run["id"])
            time.sleep(0.05)
        # Resumed from this thread: the sshd dies with the thread that started it (PR_SET_PDEATHSIG).
        device.resume()
        done = wait_run(client, auth, run["id"], 30)
        assert done["status"] == "succeeded" and done["output"] == "reached\n", done
        statuses = _statuses(client, auth, run["id"])
        assert statuses[-2:] == ["running", "succeeded"], statuses
    finally:
        device.stop()
        sshd.run_as_user(f"rm -rf {workdir}")


def test_a_device_away_longer_than_the_window_fails_its_run(worker, client, auth, sshd):
    device = sshd.spawn()
    try:
        made = client.post("/api/v1/devices", headers=auth, json={
            "id": "gone", "kind": "computer", "driver": "ssh", "host": device.host, "port": device.port,
            "username": device.username, "private_key": device.private_key, "host_key": device.host_key,
            "default_cwd": "/tmp"})
        assert made.status_code == 201, made.get_json()
        device.cut()
        started = time.monotonic()
        run = create(client, auth, prompt="p", computer_id="gone", command="true")
        done = wait_run(client, auth, run["id"], 30)
        assert done["status"] == "failed" and done["error"]["code"] == "device_unreachable", done
        assert time.monotonic() - started >= 3  # it was tried for the whole window first
    finally:
        device.stop()
