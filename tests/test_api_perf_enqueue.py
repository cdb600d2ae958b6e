"""Creating a run answers fast when the broker is down, also when it died after the API had used it.

The API no longer pings Redis before each publish; its Celery app gives up on the first failed
connection instead (core.messages.fail_fast). This pins both the fast answer and the recovery.
"""
from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import urlsplit

import redis as redis_lib

BODY = {"prompt": "p", "sandbox_id": "box-1", "provider": "custom", "command": "true"}


def _queued(url: str) -> int:
    r = redis_lib.Redis.from_url(url)
    try:
        return r.llen("agentruns")
    finally:
        r.close()


def test_broker_dying_after_a_publish_still_answers_fast_and_recovers(settings, auth, local_device, tmp_path):
    from agentruns.embedded import start_redis
    from app import create_app

    broker = start_redis(tmp_path / "broker")
    port = urlsplit(broker.url).port
    client = create_app(replace(settings, redis_url=broker.url)).test_client()
    try:
        assert client.post("/api/v1/agent-runs", headers=auth, json=BODY).status_code == 201
        assert _queued(broker.url) == 1
        broker.stop()
        for _ in range(3):  # kombu's backoff used to start at the second failure of a pooled connection
            started = time.monotonic()
            resp = client.post("/api/v1/agent-runs", headers=auth, json=BODY)
            assert resp.status_code == 201 and resp.get_json()["data"]["status"] == "queued"
            assert time.monotonic() - started < 1.5
        broker = start_redis(tmp_path / "broker", port=port)
        assert client.post("/api/v1/agent-runs", headers=auth, json=BODY).status_code == 201
        assert _queued(broker.url) == 1
    finally:
        broker.stop()

