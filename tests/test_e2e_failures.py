"""Failure paths with their own worker processes: SIGKILL (take-over), SIGTERM (grace, hand-over), broker down.

A run's command runs detached on its device (drivers/ssh_spool.py): a worker that dies or shuts down
costs the run nothing. The session's beat takes the run over once its lease lapses and the session's
worker (a second worker, on the main Redis database) re-attaches to it.
"""
from __future__ import annotations

import itertools
import signal
import time
import uuid
from dataclasses import replace
from datetime import datetime

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


def run_events(client, auth, run_id) -> list[dict]:
    return client.get(f"/api/v1/agent-runs/{run_id}/events?limit=1000", headers=auth).get_json()["data"]


def stdout_of(events: list[dict]) -> str:
    return "".join(e["data"] for e in events if e["type"] == "stdout")


def wait_events(client, auth, run_id, check, seconds: float = 20) -> list[dict]:
    """Poll a run's events until check(events) holds."""
    deadline = time.monotonic() + seconds
    while not check(events := run_events(client, auth, run_id)):
        assert time.monotonic() < deadline, f"run {run_id}: events never matched: {events}"
        time.sleep(0.1)
    return events


def reattached(events: list[dict]) -> bool:
    return any(e["type"] == "note" and "re-attached by worker" in e["data"]["note"] for e in events)


def test_a_sigkilled_workers_runs_are_taken_over_and_finish(private, auth, sshd, client):
    """kill -9 of a worker mid-run: its runs are taken over, re-attached by another worker and end as
    they would have: one succeeds with its whole output (before and after the kill, each byte in one
    event), executed once; one is still stopped at its timeout, counted from its first start."""
    from tests.stack import start_worker

    pclient, env = private
    ssh_device_for(pclient, auth, sshd, "take-over")
    ssh_device_for(pclient, auth, sshd, "take-over-timeout")
    victim = start_worker(env(), concurrency=4, name="victim")
    tag = uuid.uuid4().hex
    go, counter, marker = f"/tmp/agentruns-go-{tag}", f"/tmp/agentruns-count-{tag}", f"{3000 + uuid.uuid4().int % 5000}"
    try:
        run = create(pclient, auth, prompt="p", computer_id="take-over", command=(
            f"echo ran >> {counter}; echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after"))
        slow = create(pclient, auth, prompt="p", computer_id="take-over-timeout", timeout=8,
                      command=f"echo started; sleep {marker}7")
        wait_events(pclient, auth, run["id"], lambda evs: stdout_of(evs) == "before\n")
        wait_events(pclient, auth, slow["id"], lambda evs: stdout_of(evs) == "started\n")
        started = wait_status(pclient, auth, slow["id"], "running")["started_at"]
        victim.kill(signal.SIGKILL)  # the whole process group
        # The lease (3 s) lapses, the reaper (every 1 s) takes the runs over, a live worker re-attaches.
        events = wait_events(pclient, auth, run["id"], reattached)
        notes = [e["data"]["note"] for e in events if e["type"] == "note"]
        assert not any(n.endswith(f":{victim.pid}") for n in notes), notes  # another worker (ids end in pid)
        sshd.run_as_user(f"touch {go}")
        done = wait_run(client, auth, run["id"], 20)
        assert done["status"] == "succeeded" and done["output"] == "before\nafter\n", done
        events = run_events(client, auth, run["id"])
        assert stdout_of(events) == "before\nafter\n"  # in order, nothing lost, nothing twice
        assert [e["data"]["status"] for e in events if e["type"] == "status"] == ["queued", "running", "succeeded"]
        assert sshd.run_as_user(f"cat {counter}").stdout == "ran\n"  # executed once
        late = wait_run(client, auth, slow["id"], 20)
        assert late["status"] == "failed" and late["error"]["code"] == "timeout", late
        assert late["started_at"] == started and late["output"] == "started\n"
        # Stopped at started_at + 8 s (+ the kill's grace), not 8 s after the re-attach (~5 s in).
        ran = datetime.fromisoformat(late["finished_at"]) - datetime.fromisoformat(started)
        assert ran.total_seconds() < 11.5, ran
        deadline = time.monotonic() + 5
        while sshd.pgrep(f"sleep {marker}7"):
            assert time.monotonic() < deadline, "the re-attached run's tree survived its timeout"
            time.sleep(0.05)
    finally:
        victim.stop()


def test_sigterm_lets_short_runs_finish_and_hands_the_rest_over(private, auth, sshd, client):
    """A warm shutdown past its grace does not kill what still runs: it hands it over, another worker
    re-attaches, and a cancel then stops the re-attached run's whole tree."""
    from tests.stack import start_worker

    pclient, env = private
    ssh_device_for(pclient, auth, sshd, "long")
    ssh_device_for(pclient, auth, sshd, "short")
    w = start_worker(env(shutdown_grace_seconds=2), concurrency=4, name="graceful")
    marker = f"{3000 + uuid.uuid4().int % 5000}"
    long_run = create(pclient, auth, prompt="p", computer_id="long", command=f"echo long; sleep {marker}5")
    short_run = create(pclient, auth, prompt="p", computer_id="short", command="sleep 1; echo finished")
    wait_status(pclient, auth, long_run["id"], "running")
    wait_status(pclient, auth, short_run["id"], "running")
    w.kill(signal.SIGTERM)
    assert w.proc.wait(20) == 0, w.log()[-2000:]
    w.stop()
    short = wait_run(client, auth, short_run["id"], 5)
    assert short["status"] == "succeeded" and short["output"] == "finished\n"
    events = wait_events(client, auth, long_run["id"], reattached)
    assert any("its worker shut down" in e["data"]["note"] for e in events if e["type"] == "note")
    assert client.get(f"/api/v1/agent-runs/{long_run['id']}", headers=auth).get_json()["data"]["status"] == "running"
    assert sshd.pgrep(f"sleep {marker}5")  # never stopped, never started again
    asked = time.monotonic()
    assert client.post(f"/api/v1/agent-runs/{long_run['id']}/cancel", headers=auth).status_code == 200
    long = wait_run(client, auth, long_run["id"], 10)
    assert long["status"] == "canceled" and long["output"] == "long\n", long
    while sshd.pgrep(f"sleep {marker}5"):
        assert time.monotonic() - asked < 5, "the re-attached run's tree survived its cancel"
        time.sleep(0.05)


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
