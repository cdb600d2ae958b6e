"""Device blips wait (issue #11): a run whose device is away before its command starts goes back to
the queue and is tried again with backoff, for `device_retry_seconds` (3 s for the test worker)."""
from __future__ import annotations

import time
import uuid

import pytest

from drivers.base import AUTH_FAILED, CONNECTION_LOST, DEVICE_UNREACHABLE, DriverError
from tests.conftest import wait_run
from tests.test_e2e_runs import create
from workers.device_backoff import MAX_DELAY, delay, retryable


def _statuses(client, auth, run_id: str) -> list[str]:
    events = client.get(f"/api/v1/agent-runs/{run_id}/events", headers=auth).get_json()["data"]
    return [e["data"]["status"] for e in events if e["type"] == "status"]


@pytest.mark.unit
def test_the_backoff_doubles_up_to_its_cap():
    assert [delay(n) for n in range(1, 7)] == [1, 2, 4, 8, MAX_DELAY, MAX_DELAY]


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
