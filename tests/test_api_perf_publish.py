"""The API's own publish of runs.execute (app.enqueue.Publisher) writes what Celery's send_task writes."""
from __future__ import annotations

import base64
import json
import uuid

from core.messages import Queued, make_celery, queue_for


def _decoded(raw: bytes) -> dict:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _without_ids(message: dict) -> dict:
    task_id = message["headers"]["id"]
    assert message["headers"]["root_id"] == task_id == message["properties"]["correlation_id"]
    uuid.UUID(task_id), uuid.UUID(message["properties"]["delivery_tag"])
    for where, key in (("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"),
                       ("properties", "delivery_tag")):
        message[where][key] = "*"
    return message


def test_the_fast_publish_writes_celerys_message(settings, redis_client):
    from app.enqueue import Publisher

    celery = make_celery(settings)
    publisher = Publisher(celery, redis_client)
    pool = f"perf-{uuid.uuid4().hex[:8]}"
    queue = queue_for(pool)
    run = Queued(uuid.uuid4(), uuid.uuid4(), "box-1", pool)
    try:
        assert publisher.enqueue([run]) == [run.run_id]  # the first: Celery's send_task (declares the queue)
        assert publisher.enqueue([run]) == [run.run_id]  # then ours
        assert redis_client.llen(queue) == 2
        ours, celerys = redis_client.rpop(queue), redis_client.rpop(queue)  # LPUSH: the newest is on the left
        assert list(json.loads(ours)) == list(json.loads(celerys))  # the envelope's keys, in order
        assert _without_ids(_decoded(ours)) == _without_ids(_decoded(celerys))
        assert _decoded(ours)["body"][0] == [str(run.run_id), str(run.tenant_id), "box-1"]
    finally:
        redis_client.delete(queue)


def test_a_failed_fast_publish_reports_nothing_sent(settings, redis_client):
    import redis as redis_lib

    from app.enqueue import Publisher

    publisher = Publisher(make_celery(settings), redis_lib.Redis(port=1, socket_connect_timeout=0.5))
    publisher._declared.add("agentruns")  # as after a first publish
    assert publisher.enqueue([Queued(uuid.uuid4(), uuid.uuid4(), "box-1")]) == []
