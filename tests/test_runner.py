"""The worker's serve loop in this process, against the real PostgreSQL and Redis and a `local` device.

The runs are created through an API on a Redis database no worker listens to (quiet_client), so only
the runner called here moves them.
"""
from __future__ import annotations

import os
import uuid

import pytest
import redis

from workers.supervisor import ActiveRun


@pytest.fixture()
def worker_ctx(settings, monkeypatch):
    """This process as a worker: its own context, so a test can swap a part of it."""
    from core import device_networks
    from workers import context
    from workers.device_backoff import DeviceBackoff
    from workers.device_cache import DeviceCache
    from workers.leases import Leases
    from workers.supervisor import Supervisor

    def make(leases_cls=Leases):
        r = redis.Redis.from_url(settings.redis_url)
        ctx = context.WorkerContext(settings, r, leases_cls(r), f"test:{os.getpid()}",
                                    DeviceCache(settings.secret_key, device_networks.policy(settings)))
        ctx.supervisor = Supervisor(ctx)
        ctx.backoff = DeviceBackoff(r, settings.device_retry_seconds, lambda: None)  # sends nothing here
        monkeypatch.setattr(context, "_ctx", ctx)
        return ctx

    return make


def _queue(quiet_client, auth, n: int) -> list[dict]:
    runs = []
    for i in range(n):
        resp = quiet_client.post("/api/v1/agent-runs", headers=auth, json={
            "prompt": str(i), "sandbox_id": "box-1", "provider": "custom", "command": "true"})
        assert resp.status_code == 201, resp.get_json()
        runs.append(resp.get_json()["data"])
    return runs


def _status(quiet_client, auth, run: dict) -> dict:
    return quiet_client.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).get_json()["data"]


def _tenant(run: dict) -> str:
    from core import db
    from core.models import Run

    with db.session() as s:
        row = s.get(Run, uuid.UUID(run["id"]))
        assert row is not None, f"run {run['id']} is not in the database"
        return str(row.tenant_id)


def test_a_redis_error_at_unlock_does_not_strand_the_next_run(worker_ctx, quiet_client, auth, local_device):
    """The next run is claimed in the transaction that records a result; a failing Redis call after
    that commit must not lose it (it would stay `running` until the reaper failed it)."""
    from workers import runner
    from workers.leases import Leases

    class RedisGoneAtUnlock(Leases):
        def unlock(self, *args, **kwargs):
            raise redis.ConnectionError("Redis went away")

    worker_ctx(RedisGoneAtUnlock)
    first, second = _queue(quiet_client, auth, 2)
    assert runner.execute(first["id"], _tenant(first), "box-1") == "executed:2"
    assert [_status(quiet_client, auth, r)["status"] for r in (first, second)] == ["succeeded", "succeeded"]


def test_a_draining_worker_finishes_its_run_and_claims_no_more(worker_ctx, quiet_client, auth, local_device):
    from workers import runner

    ctx = worker_ctx()
    first, second = _queue(quiet_client, auth, 2)
    ctx.supervisor.draining = True
    assert runner.execute(first["id"], _tenant(first), "box-1") == "executed:1"
    assert _status(quiet_client, auth, first)["status"] == "succeeded"
    assert _status(quiet_client, auth, second)["status"] == "queued"  # left for a live worker


def test_a_failed_finish_puts_the_last_output_back_for_a_later_flush(worker_ctx):
    ctx = worker_ctx()
    run = ActiveRun(uuid.uuid4(), 1, "lock", "t", "slot", "t")
    run.events = [("stdout", "a"), ("stderr", "b")]
    with pytest.raises(RuntimeError):
        with ctx.supervisor.final_events(run) as rows:
            assert [r["data"] for r in rows] == ["a", "b"] and run.events == []
            raise RuntimeError("the finish transaction failed")
    assert run.events == [("stdout", "a"), ("stderr", "b")] and run.events_written == 0


def test_a_changed_device_limit_is_seen_within_max_age(worker_ctx, quiet_client, auth, local_device, monkeypatch):
    from workers import device_cache

    ctx = worker_ctx()
    (run,) = _queue(quiet_client, auth, 1)
    tenant = uuid.UUID(_tenant(run))
    assert ctx.devices.get(tenant, "box-1").max_concurrent_runs == 1
    resp = quiet_client.patch("/api/v1/devices/box-1", headers=auth, json={"max_concurrent_runs": 3})
    assert resp.status_code == 200, resp.get_json()
    assert ctx.devices.get(tenant, "box-1").max_concurrent_runs == 1  # checked less than MAX_AGE ago
    monkeypatch.setattr(device_cache, "MAX_AGE", 0.0)
    assert ctx.devices.get(tenant, "box-1").max_concurrent_runs == 3


def test_a_device_changed_while_queued_runs_wait_is_read_anew_and_all_runs_still_run(
        worker_ctx, quiet_client, auth, local_device):
    from workers import runner

    ctx = worker_ctx()
    runs = _queue(quiet_client, auth, 3)
    tenant = _tenant(runs[0])
    cached = ctx.devices.get(uuid.UUID(tenant), "box-1")
    resp = quiet_client.patch("/api/v1/devices/box-1", headers=auth, json={"env": {"CHANGED": "1"}})
    assert resp.status_code == 200, resp.get_json()
    # The first claim sees the new version: that run uses the new settings, then the delivery lets
    # its slot go and takes one again under the device's current limit, and serves the rest.
    assert runner.execute(runs[0]["id"], tenant, "box-1") == "executed:3"
    assert [_status(quiet_client, auth, r)["status"] for r in runs] == ["succeeded"] * 3
    assert ctx.devices.get(uuid.UUID(tenant), "box-1").version != cached.version


def test_a_worker_that_does_not_allow_local_devices_fails_their_runs_untouched(worker_ctx, quiet_client, auth,
                                                                              local_device, settings, tmp_path):
    from dataclasses import replace

    from workers import runner

    ctx = worker_ctx()
    ctx.settings = replace(settings, allow_local_devices=False)
    marker = tmp_path / "ran"
    resp = quiet_client.post("/api/v1/agent-runs", headers=auth, json={
        "prompt": "p", "sandbox_id": "box-1", "provider": "custom", "command": f"touch {marker}"})
    run = resp.get_json()["data"]
    assert runner.execute(run["id"], _tenant(run), "box-1") == "executed:1"
    done = _status(quiet_client, auth, run)
    assert done["status"] == "failed" and done["error"]["code"] == "local_driver_disabled", done
    assert done["started_at"] is None and not marker.exists()
