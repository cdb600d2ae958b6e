"""Failure paths with their own worker processes: SIGKILL (reaper), SIGTERM (grace), broker down."""
from __future__ import annotations

import itertools
import signal
import time
import uuid
from dataclasses import replace

import pytest

from tests.conftest import wait_run
from tests.test_e2e_runs import create, wait_for_process, wait_status

pytestmark = pytest.mark.e2e
_redis_db = itertools.count(1)


@pytest.fixture()
def private(settings, worker):
    """An API app and env on their own Redis database, so only the worker we start serves them.

    The session's beat (reaper, sweeper) still runs: it works on PostgreSQL, which is shared.
    """
    from app import create_app
    from tests.conftest import E2E_OVERRIDES
    from tests.stack import service_env

    base, _, _ = settings.redis_url.rpartition("/")
    own = replace(settings, redis_url=f"{base}/{next(_redis_db)}")
    flask_app = create_app(own)
    return flask_app.test_client(), lambda **kw: service_env(own, **{**E2E_OVERRIDES, **kw})


def ssh_device_for(client, auth, sshd, device_id):
    workdir = f"/tmp/agentruns-e2e-{uuid.uuid4().hex[:8]}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    resp = client.post("/api/v1/devices", headers=auth, json={
        "id": device_id, "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
        "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key,
        "default_cwd": workdir})
    assert resp.status_code == 201, resp.get_json()


def test_sigkilled_worker_is_reaped_as_worker_lost(private, auth, sshd, client):
    from tests.stack import start_worker

    pclient, env = private
    ssh_device_for(pclient, auth, sshd, "reap-me")
    victim = start_worker(env(), concurrency=4, name="victim")
    try:
        marker = f"{3000 + uuid.uuid4().int % 5000}"
        run = create(pclient, auth, prompt="p", computer_id="reap-me", command=f"sleep {marker}4")
        wait_status(pclient, auth, run["id"], "running")
        wait_for_process(sshd, f"sleep {marker}4")
        # The reaper kills the process group the worker recorded (within a heartbeat tick of the start).
        deadline = time.monotonic() + 5
        while (not pclient.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).get_json()["data"]["started_at"]
               and time.monotonic() < deadline):
            time.sleep(0.05)
        killed_at = time.monotonic()
        victim.kill(signal.SIGKILL)
        done = wait_run(client, auth, run["id"], 20)
        assert done["status"] == "failed" and done["error"]["code"] == "worker_lost", done
        # lease (3 s) + one reaper sweep (1 s) + scheduling slack
        assert time.monotonic() - killed_at < 10
        deadline = time.monotonic() + 5
        while sshd.pgrep(f"sleep {marker}4") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sshd.pgrep(f"sleep {marker}4") == []  # the reaper killed the remote process group
    finally:
        victim.stop()


def test_sigterm_lets_short_runs_finish_and_records_the_rest(private, auth, sshd, client):
    from tests.stack import start_worker

    pclient, env = private
    ssh_device_for(pclient, auth, sshd, "long")
    ssh_device_for(pclient, auth, sshd, "short")
    w = start_worker(env(shutdown_grace_seconds=2), concurrency=4, name="graceful")
    marker = f"{3000 + uuid.uuid4().int % 5000}"
    long_run = create(pclient, auth, prompt="p", computer_id="long", command=f"sleep {marker}5")
    short_run = create(pclient, auth, prompt="p", computer_id="short", command="sleep 1; echo finished")
    wait_status(pclient, auth, long_run["id"], "running")
    wait_status(pclient, auth, short_run["id"], "running")
    w.kill(signal.SIGTERM)
    assert w.proc.wait(20) == 0, w.log()[-2000:]
    w.stop()
    short = wait_run(client, auth, short_run["id"], 5)
    assert short["status"] == "succeeded" and short["output"] == "finished\n"
    long = wait_run(client, auth, long_run["id"], 5)
    assert long["status"] == "failed" and long["error"]["code"] == "worker_shutdown", long
    assert sshd.pgrep(f"sleep {marker}5") == []


def test_broker_down_at_enqueue_loses_nothing(settings, worker, auth, client, local_device):
    from app import create_app
    from tests.sshd import free_port

    down = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")).test_client()
    started = time.monotonic()
    resp = down.post("/api/v1/agent-runs", headers=auth,
                     json={"prompt": "p", "sandbox_id": "box-1", "provider": "custom", "command": "echo swept"})
    assert resp.status_code == 201 and resp.get_json()["data"]["status"] == "queued"
    assert time.monotonic() - started < 5
    # The sweeper (queued for 5 s without a claim) re-enqueues it on the live broker.
    done = wait_run(client, auth, resp.get_json()["data"]["id"], 30)
    assert done["status"] == "succeeded" and done["output"] == "swept\n"


def test_cancel_reaches_the_worker_at_once_not_at_its_next_heartbeat(private, auth, sshd, client):
    from tests.stack import start_worker

    pclient, env = private
    ssh_device_for(pclient, auth, sshd, "cancel-fast")
    # A 20 s heartbeat: only the published cancel can stop the run within 2 s.
    w = start_worker(env(heartbeat_seconds=20, lease_seconds=60), concurrency=4, name="slow-heartbeat")
    try:
        marker = f"{3000 + uuid.uuid4().int % 5000}"
        run = create(pclient, auth, prompt="p", computer_id="cancel-fast", command=f"sleep {marker}6")
        wait_status(pclient, auth, run["id"], "running")
        wait_for_process(sshd, f"sleep {marker}6")
        asked = time.monotonic()
        assert pclient.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth).status_code == 200
        while sshd.pgrep(f"sleep {marker}6") and time.monotonic() - asked < 10:
            time.sleep(0.05)
        killed_after = time.monotonic() - asked
        assert killed_after < 2.0, f"the remote tree was still alive {killed_after:.2f} s after the cancel"
        done = wait_run(client, auth, run["id"], 10)
        assert done["status"] == "canceled"
    finally:
        w.stop()
