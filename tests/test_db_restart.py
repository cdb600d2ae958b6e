"""A run that ends while PostgreSQL restarts keeps its result, recorded by the worker that ran it
(issue #11: the result was written once, the OperationalError dropped it, and only a later recovery
could save the run)."""
from __future__ import annotations

import time
import uuid

import httpx
import psycopg
import pytest

from tests.faults import FaultStack
from tests.test_faults import OVERRIDES

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_a_result_written_during_a_database_restart_is_recorded_by_its_worker(tmp_path, sshd):
    # A lease well above the outage (about 5 s here): this test is about the worker's own retries, not
    # the reaper's take-over, which a lease shorter than the outage would let win the race.
    stack = FaultStack(tmp_path, {**OVERRIDES, "lease_seconds": 15})
    device = sshd.spawn()
    workdir = f"/tmp/agentruns-dbrestart-{uuid.uuid4().hex[:6]}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    try:
        stack.start()
        stack.add_device("dev", device, workdir, slots=2)
        api = httpx.Client(base_url=stack.api_url, headers=stack.auth, timeout=30)
        run = api.post("/api/v1/agent-runs", json={"prompt": "p", "computer_id": "dev", "provider": "custom",
                                                    "command": "sleep 1.5; echo done"}).json()["data"]
        deadline = time.monotonic() + 20
        while api.get(f"/api/v1/agent-runs/{run['id']}").json()["data"]["started_at"] is None:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        stack.restart_postgres(down_seconds=2.5)  # the command ends while the database is away
        deadline = time.monotonic() + 30
        while (done := api.get(f"/api/v1/agent-runs/{run['id']}").json()["data"])["status"] == "running":
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        assert done["status"] == "succeeded" and done["output"] == "done\n", done
        assert stack.pg is not None
        with psycopg.connect(stack.pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
            epoch = conn.execute("SELECT epoch FROM runs WHERE id = %s", (run["id"],)).fetchone()
        assert epoch == (1,), "recorded through a take-over, not by the worker that ran it"
    finally:
        stack.stop()
        device.stop()
        sshd.run_as_user(f"rm -rf {workdir}")
