"""Webhook events survive the processes that wrote or sent them: real processes on servers of their own.

- A worker SIGKILLed right after it recorded runs' ends, and Redis restarted empty (every Celery
  message lost): the events were written in the runs' own transactions (the outbox), so a worker
  started afterwards delivers every one of them, once.
- A worker SIGKILLed while a request is in flight: its hold on the delivery lapses and another worker
  sends the same event again (at least once, under one event id).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from agentruns import webhooks
from agentruns.embedded import start_postgres, start_redis
from core.config import Settings
from core.crypto import new_secret_key
from core.migrate import upgrade
from tests.sshd import free_port
from tests.stack import AGENTRUNS, service_env, start_api, start_beat, start_worker
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
ENV = dict(allow_local_devices=1, webhook_allow_http=1, webhook_allow_private=1, webhook_retry_base_seconds=0.3,
           webhook_timeout_seconds=1, lease_seconds=3, heartbeat_seconds=0.5, reaper_interval_seconds=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """PostgreSQL, Redis, the API and beat of this module alone; the tests start and kill the workers."""
    root = tmp_path_factory.mktemp("webhook-recovery")
    pg, redis = start_postgres(root / "pg", fast=True), start_redis(root / "redis")
    settings = Settings(database_url=pg.url, redis_url=redis.url, secret_key=new_secret_key())
    upgrade(pg.url)
    env = service_env(settings, **ENV)
    out = subprocess.run([AGENTRUNS, "keys", "create", "--tenant", "recovery", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    port = free_port()
    api, beat = start_api(env, port, name="recovery-api"), start_beat(env)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                        headers={"Authorization": f"Bearer {json.loads(out.stdout)['key']}"})
    resp = http.post("/api/v1/devices", json={"id": "box", "kind": "sandbox", "driver": "local",
                                              "default_cwd": str(root), "max_concurrent_runs": 4})
    assert resp.status_code == 201, resp.text
    servers = {"redis": redis}

    def restart_redis_empty() -> None:
        port = servers["redis"].port
        os.kill(servers["redis"].pid, signal.SIGKILL)
        servers["redis"].stop()  # it is gone: this only releases its data dir
        servers["redis"] = start_redis(root / f"redis-{time.time_ns()}", port=port)

    yield env, http, restart_redis_empty
    http.close()
    for proc in (beat, api):
        proc.stop(timeout=10)
    servers["redis"].stop(), pg.stop()


@pytest.fixture()
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def finished_run(http) -> dict:
    resp = http.post("/api/v1/agent-runs", json={"target_id": "box", "provider": "custom", "command": "echo hi",
                                                 "prompt": "p", "wait": 30})
    assert resp.status_code == 201 and resp.json()["data"]["status"] == "succeeded", resp.text
    return resp.json()["data"]


def test_events_recorded_by_a_killed_worker_are_delivered_by_the_next(stack, receiver):
    env, http, restart_redis_empty = stack
    hook = http.post("/api/v1/webhooks", json={"url": receiver.url("/k")}).json()["data"]
    runs_only = start_worker(env, concurrency=8, name="runs-only", options=("--no-webhooks",))
    try:
        done = [finished_run(http) for _ in range(3)]
    finally:
        runs_only.kill()  # SIGKILL, right after it recorded the runs' ends
    assert receiver.received == []  # nobody has sent anything yet
    restart_redis_empty()  # and no Celery message survives: only the database remembers the events
    sender = start_worker(env, concurrency=8, name="after")
    try:
        got = [webhooks.verify(r.body, r.headers[webhooks.SIGNATURE_HEADER], hook["secret"])
               for r in receiver.wait_for("/k", 9)]
        time.sleep(1.0)
        assert len(receiver.at("/k")) == 9  # once each
        for run in done:
            assert [e["type"] for e in got if e["data"]["id"] == run["id"]] == [
                "run.queued", "run.started", "run.succeeded"]
    finally:
        sender.stop()


def test_a_delivery_held_by_a_killed_worker_is_sent_again(stack, receiver):
    env, http, _ = stack
    resp = http.post("/api/v1/webhooks", json={"url": receiver.url("/held"), "events": ["run.succeeded"]})
    hook = resp.json()["data"]
    receiver.delay = 5.0  # longer than the request timeout (1 s): the request is in flight a while
    first = start_worker(env, concurrency=8, name="first")
    try:
        finished_run(http)
        receiver.wait_for("/held", 1)
    finally:
        first.kill()  # SIGKILL mid-request: the delivery stays held by a process that is gone
    receiver.delay = 0.0
    second = start_worker(env, concurrency=8, name="second")
    try:
        got = receiver.wait_for("/held", 2, timeout=40)  # once the hold (3 x timeout + 10 s) lapses
        assert got[0].headers[webhooks.EVENT_ID_HEADER] == got[1].headers[webhooks.EVENT_ID_HEADER]
        assert got[1].at - got[0].at > 10
        deadline = time.monotonic() + 10  # the receiver saw the request before the dispatcher recorded it
        while (delivery := http.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"][0])[
                "state"] != "delivered":
            assert time.monotonic() < deadline, delivery
            time.sleep(0.1)
        # The killed worker's attempt left no record; the one that got through did.
        assert (delivery["state"], delivery["attempts"]) == ("delivered", 1), delivery
    finally:
        second.stop()
