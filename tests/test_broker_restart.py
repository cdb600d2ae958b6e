"""Workers survive a Redis restart (issue #11): with acks_late, kombu's Redis transport crashed the
worker when the broker went away while it held a message (AttributeError on the closed connection,
taken by Celery for an unrecoverable error: the worker exited with code 0)."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from tests.conftest import E2E_OVERRIDES, make_key, wait_run

pytestmark = pytest.mark.e2e


@pytest.fixture()
def own_redis(tmp_path):
    """A Redis of this test's own (others share the session's), restartable on its port."""
    from agentruns.embedded import start_redis

    servers = [start_redis(tmp_path / "redis-1")]
    yield servers
    for server in servers:
        server.stop()


def test_a_worker_holding_a_message_survives_a_redis_restart(settings, own_redis, tmp_path):
    from agentruns.embedded import start_redis
    from app import create_app
    from tests.stack import service_env, start_worker

    redis_server = own_redis[0]
    mine = replace(settings, redis_url=redis_server.url)
    worker = start_worker(service_env(mine, **E2E_OVERRIDES), concurrency=4, name="restart")
    try:
        client = create_app(mine).test_client()
        auth = {"Authorization": f"Bearer {make_key()[1]}"}
        made = client.post("/api/v1/devices", headers=auth, json={
            "id": "box", "kind": "sandbox", "driver": "local", "default_cwd": str(tmp_path)})
        assert made.status_code == 201, made.get_json()

        def create(command: str) -> str:
            resp = client.post("/api/v1/agent-runs", headers=auth, json={
                "prompt": "p", "sandbox_id": "box", "provider": "custom", "command": command})
            assert resp.status_code == 201, resp.get_json()
            return resp.get_json()["data"]["id"]

        first = create("sleep 2; echo first")
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/agent-runs/{first}", headers=auth).get_json()["data"]["status"] != "running":
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.05)
        os.kill(redis_server.pid, signal.SIGKILL)  # the broker dies while the worker holds the message
        worker.wait_for("Connection to broker lost", timeout=20)
        own_redis.append(start_redis(tmp_path / "redis-2", port=redis_server.port))  # back, empty

        done = wait_run(client, auth, first, 30)
        assert done["status"] == "succeeded" and done["output"] == "first\n", done
        second = wait_run(client, auth, create("echo second"), 30)  # served by the reconnected worker
        assert second["status"] == "succeeded" and second["output"] == "second\n", second
        assert worker.proc.poll() is None, worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log()
    finally:
        worker.stop()
