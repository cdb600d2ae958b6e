"""End to end: a run's connection drops mid-run (resumed), or its device stays away (device_lost).

Each test gives its device an sshd of its own (sshd.spawn()), so cutting that device (tests/sshd.py
cut(): the listener and every connection's sshd die, the commands keep running, as in a network
cut) touches no other test's runs.
"""
from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import wait_run
from tests.test_e2e_failures import private, run_events, stdout_of, wait_events  # noqa: F401 - private: a fixture
from tests.test_e2e_runs import create

pytestmark = pytest.mark.e2e

GATED = "echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after; echo done >&2"


def device_on(client, auth, server, device_id: str) -> None:
    resp = client.post("/api/v1/devices", headers=auth, json={
        "id": device_id, "kind": "computer", "driver": "ssh", "host": server.host, "port": server.port,
        "username": server.username, "private_key": server.private_key, "host_key": server.host_key,
        "default_cwd": "/tmp"})
    assert resp.status_code == 201, resp.get_json()


def test_a_dropped_connection_is_resumed_with_the_whole_output(worker, client, auth, sshd):
    device = sshd.spawn()
    try:
        device_on(client, auth, device, "cut-me")
        go = f"/tmp/agentruns-go-{uuid.uuid4().hex}"
        run = create(client, auth, prompt="p", computer_id="cut-me", command=GATED.format(go=go))
        wait_events(client, auth, run["id"], lambda evs: stdout_of(evs) == "before\n")
        device.cut()  # the worker's connection is gone; the command goes on
        device.resume()  # a blip: the device answers again, the worker reconnects and re-attaches
        sshd.run_as_user(f"touch {go}")
        done = wait_run(client, auth, run["id"], 20)
        assert done["status"] == "succeeded", done
        assert (done["output"], done["stderr"]) == ("before\nafter\n", "done\n")
        events = run_events(client, auth, run["id"])
        assert stdout_of(events) == "before\nafter\n"  # in order, nothing lost, nothing twice
        assert "".join(e["data"] for e in events if e["type"] == "stderr") == "done\n"
        assert f"run {run['id']} lost its channel; re-attaching" in worker.log()
    finally:
        device.stop()


def test_a_device_unreachable_past_the_limit_fails_device_lost(request, auth, sshd, client):
    from tests.stack import start_worker

    pclient, env = request.getfixturevalue("private")  # own Redis database: only our worker runs it
    device = sshd.spawn()
    w = start_worker(env(device_lost_seconds=2), concurrency=4, name="patient")
    go = f"/tmp/agentruns-go-{uuid.uuid4().hex}"
    try:
        device_on(pclient, auth, device, "goes-away")
        run = create(pclient, auth, prompt="p", computer_id="goes-away", command=GATED.format(go=go))
        wait_events(pclient, auth, run["id"], lambda evs: stdout_of(evs) == "before\n")
        device.cut()
        cut_at = time.monotonic()
        done = wait_run(client, auth, run["id"], 20)
        assert done["status"] == "failed" and done["error"]["code"] == "device_lost", done
        assert 2 <= time.monotonic() - cut_at < 10
        assert done["started_at"] and stdout_of(run_events(client, auth, run["id"])) == "before\n"
    finally:
        sshd.run_as_user(f"touch {go}")  # the command still waits on the device: let it end
        w.stop()
        device.stop()
