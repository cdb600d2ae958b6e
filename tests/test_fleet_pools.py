"""Worker pools and device selection: a run goes to its device's pool's queue, only that pool's
workers run it, a pool change takes queued runs along, and a target_selector picks a free matching
device. Real worker processes (`agentruns worker --pool`) on a Redis database of this test's own."""
from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from core.config import Settings
from core.messages import EXECUTE, Queued, execute_args, make_celery, queue_for
from tests.conftest import wait_run
from tests.stack import start_worker
from tests.test_e2e_failures import private  # noqa: F401 - a fixture, used through request.getfixturevalue

pytestmark = pytest.mark.e2e


def add_device(client, auth, device_id, tmp_path, **fields):
    resp = client.post("/api/v1/devices", json={"id": device_id, "kind": "sandbox", "driver": "local",
                                                "default_cwd": str(tmp_path), **fields}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


def new_run(client, auth, **body):
    resp = client.post("/api/v1/agent-runs", json={"provider": "custom", "command": "echo ok", "prompt": "p",
                                                   **body}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


def status_of(client, auth, run_id):
    return client.get(f"/api/v1/agent-runs/{run_id}", headers=auth).get_json()["data"]["status"]


def test_the_pool_field(client, auth, tmp_path):
    assert add_device(client, auth, "plain", tmp_path)["pool"] == "default"
    assert add_device(client, auth, "gpu-1", tmp_path, pool="gpu")["pool"] == "gpu"
    resp = client.patch("/api/v1/devices/plain", json={"pool": "eu-west.2"}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["data"]["pool"] == "eu-west.2"
    bad = client.patch("/api/v1/devices/plain", json={"pool": "no spaces"}, headers=auth)
    assert bad.status_code == 422 and "pool" in bad.get_json()["error"]["details"]["fields"]
    assert queue_for("default") == "agentruns" and queue_for("gpu") == "agentruns.pool.gpu"


def test_runs_go_only_to_their_pools_workers_and_follow_a_pool_change(request, auth, tmp_path):
    client, env = request.getfixturevalue("private")
    add_device(client, auth, "g1", tmp_path, pool="gpu")
    add_device(client, auth, "e1", tmp_path, pool="eu")  # no worker serves pool eu
    gpu = start_worker(env(), concurrency=8, name="pool-gpu", options=("--pool", "gpu", "--no-webhooks"))
    try:
        served = new_run(client, auth, sandbox_id="g1")
        stranded = new_run(client, auth, sandbox_id="e1")
        assert wait_run(client, auth, served["id"])["status"] == "succeeded"
        time.sleep(2.0)
        assert status_of(client, auth, stranded["id"]) == "queued"  # its pool has no worker: it waits
        moved = client.patch("/api/v1/devices/e1", json={"pool": "gpu"}, headers=auth)
        assert moved.status_code == 200
        assert wait_run(client, auth, stranded["id"])["status"] == "succeeded"  # re-routed with its device
    finally:
        gpu.stop()


def test_a_message_that_reaches_another_pool_is_passed_on(request, quiet_client, auth, tmp_path):
    client, env = request.getfixturevalue("private")
    add_device(client, auth, "x1", tmp_path, pool="green")
    blue = start_worker(env(), concurrency=4, name="pool-blue", options=("--pool", "blue", "--no-webhooks"))
    green = start_worker(env(), concurrency=4, name="pool-green", options=("--pool", "green", "--no-webhooks"))
    try:
        run = new_run(quiet_client, auth, sandbox_id="x1")  # created without a message on our Redis
        celery = make_celery(Settings(redis_url=env()["REDIS_URL"]))
        # As if sent before the device moved to pool green: to pool blue's queue.
        message = Queued(uuid.UUID(run["id"]), tenant_of(run["id"]), "x1")
        celery.send_task(EXECUTE, args=execute_args(message), queue=queue_for("blue"))
        assert wait_run(client, auth, run["id"])["status"] == "succeeded"
        # Celery logs a task's return value after the task: a moment after the run's result is
        # recorded, which the long-poll now reports at once.
        deadline = time.monotonic() + 10
        while "executed:1" not in green.log():
            assert time.monotonic() < deadline, green.log()[-2000:]
            time.sleep(0.05)
        assert "'rerouted'" in blue.log()
    finally:
        blue.stop(), green.stop()


def tenant_of(run_id: str) -> uuid.UUID:
    from sqlalchemy import select

    from core import db
    from core.models import Run

    with db.session() as s:
        tenant = s.scalar(select(Run.tenant_id).where(Run.id == uuid.UUID(run_id)))
    assert tenant is not None
    return tenant


def test_a_selector_picks_free_matching_devices_and_spreads_load(quiet_client, auth, tmp_path):
    client = quiet_client  # no worker: runs stay queued, so the load is what the selector sees
    for device_id, labels in [("a", {"gpu": "a100"}), ("b", {"gpu": "a100", "region": "eu"}),
                              ("c", {"gpu": "h100"})]:
        add_device(client, auth, device_id, tmp_path, labels=labels, max_concurrent_runs=2)
    picked = [new_run(client, auth, target_selector={"gpu": "a100"})["target_id"] for _ in range(4)]
    assert Counter(picked) == {"a": 2, "b": 2}  # least loaded first: never three on one while one is free
    assert new_run(client, auth, target_selector={"region": "eu"})["target_id"] == "b"
    # All matching devices busy: the run still goes to the least loaded one, and waits there.
    assert new_run(client, auth, target_selector={"gpu": "h100"}, target_kind="sandbox")["target_id"] == "c"
    none = client.post("/api/v1/agent-runs", json={"target_selector": {"gpu": "tpu"}, "prompt": "p"}, headers=auth)
    assert none.status_code == 422 and none.get_json()["error"]["code"] == "no_matching_device"
    both = client.post("/api/v1/agent-runs", json={"target_selector": {"gpu": "a100"}, "sandbox_id": "a",
                                                   "prompt": "p"}, headers=auth)
    assert both.status_code == 422 and "target_selector" in both.get_json()["error"]["details"]["fields"]
    wrong_kind = client.post("/api/v1/agent-runs", json={"target_selector": {"gpu": "a100"},
                                                         "target_kind": "computer", "prompt": "p"}, headers=auth)
    assert wrong_kind.status_code == 422


@pytest.mark.parametrize("allowed, pool, ok", [("", "default", True), ("", "gpu", False), ("gpu, eu", "eu", True),
                                              ("gpu", "other", False), ("*", "anything", True)])
def test_pools_are_the_operators(app, auth, tmp_path, allowed, pool, ok):
    from dataclasses import replace

    from app import create_app

    client = create_app(replace(app.extensions["settings"], pools=allowed)).test_client()
    resp = client.post("/api/v1/devices", json={"id": "p", "kind": "sandbox", "driver": "local",
                                                "default_cwd": str(tmp_path), "pool": pool}, headers=auth)
    assert (resp.status_code == 201) is ok, resp.get_json()
    if not ok:
        assert "AGENTRUNS_POOLS" in resp.get_json()["error"]["details"]["fields"]["pool"][0]
