"""An operator's view of the workers: `celery inspect` and Flower on the service's Celery app, against
a real worker process holding a real run."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.sshd import free_port
from tests.stack import AGENTRUNS, Proc

pytestmark = pytest.mark.e2e
CELERY = [sys.executable, "-m", "celery", "-A", "workers.tasks"]


@pytest.fixture()
def held_run(worker, client, auth, local_device):
    """A run the session's worker is executing (it waits for a file), canceled afterwards."""
    resp = client.post("/api/v1/agent-runs", json={"target_id": local_device["id"], "provider": "custom",
                                                   "command": "sleep 30", "prompt": "p"}, headers=auth)
    run = resp.get_json()["data"]
    deadline = time.monotonic() + 20
    while client.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).get_json()["data"]["started_at"] is None:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    yield run
    client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)


def inspect(e2e_env, *command: str) -> dict:
    out = subprocess.run([*CELERY, "inspect", *command, "--json", "--timeout", "5"], env=e2e_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_celery_inspect_names_the_runs_a_worker_holds(e2e_env, held_run):
    # The session's worker is shared with other test files: other runs may be held beside ours.
    held = {r["run_id"]: r for replies in inspect(e2e_env, "runs").values() for r in replies}
    assert held_run["id"] in held, held
    assert held[held_run["id"]]["pgid"] and held[held_run["id"]]["started_at"]
    active = inspect(e2e_env, "active")
    tasks = [t for worker_tasks in active.values() for t in worker_tasks]
    # Beside it the shared worker may be running a periodic task, which takes no arguments.
    assert ("runs.execute", held_run["id"]) in [(t["name"], t["args"][:1] and t["args"][0]) for t in tasks], tasks


def test_flower_shows_the_worker(e2e_env, worker):
    port = free_port()
    # Flower's JSON API wants authentication unless told otherwise (the operator's choice, as here).
    flower = Proc([AGENTRUNS, "flower", "--port", str(port)], {**e2e_env, "FLOWER_UNAUTHENTICATED_API": "true"},
                  "flower")
    try:
        deadline = time.monotonic() + 60
        workers: dict = {}
        while not workers:
            assert time.monotonic() < deadline, flower.log()[-2000:]
            try:
                workers = httpx.get(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10).json()
            except (httpx.HTTPError, ValueError):  # not listening yet
                time.sleep(0.5)
        (name,) = workers
        assert name.startswith("worker@")
        assert {q["name"] for q in workers[name]["active_queues"]} == {"agentruns", "agentruns.webhooks"}
        assert "runs.execute" in workers[name]["registered"]
        page = httpx.get(f"http://127.0.0.1:{port}/workers", timeout=10)
        assert page.status_code == 200 and "Flower" in page.text
    finally:
        flower.stop(timeout=10)
