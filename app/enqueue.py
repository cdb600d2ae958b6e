"""The API's publish of runs.execute: the same message Celery sends, in one LPUSH.

`celery.send_task` costs the API more CPU than the INSERT it follows (a producer from the pool,
kombu's channel and a new redis-py client per publish, the envelope built in three layers). Once
Celery has published to a queue from this process (which also declares the queue's binding, as it
did before), later messages to it are built here, byte for byte the format Celery's Redis transport
writes (protocol 2, JSON, base64 body; tests/test_api_perf_publish.py compares the two), and pushed
with the API's own Redis client. The workers consume them unchanged.

Failures are handled as in core.messages.enqueue: logged, the run stays queued, the sweeper re-sends.
"""
from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import TYPE_CHECKING

import redis

from core.messages import EXECUTE, Queued, enqueue, execute_args, queue_for

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("agentruns.enqueue")
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class Publisher:
    """Publishes runs.execute for one API process: Celery for a queue's first message, then LPUSH."""

    def __init__(self, celery: Celery, r: redis.Redis):
        self.celery, self.r = celery, r
        self._declared: set[str] = set()

    def enqueue(self, runs: list[Queued]) -> list[uuid.UUID]:
        """Publish runs.execute for each run (after their rows committed); returns the ids sent."""
        sent: list[uuid.UUID] = []
        for run in runs:
            queue = queue_for(run.pool)
            if queue not in self._declared:
                if enqueue(self.celery, [run]):  # declares the queue, as every publish of Celery's does
                    self._declared.add(queue)
                    sent.append(run.run_id)
                continue
            try:
                self.r.lpush(queue, self.message(run, queue))
                sent.append(run.run_id)
            except redis.RedisError as exc:
                log.warning("enqueue failed, the sweeper will retry: %s", type(exc).__name__)
                break  # as core.messages.enqueue: the broker is unreachable, stop here
        return sent

    def message(self, run: Queued, queue: str) -> str:
        """The message Celery's send_task(EXECUTE, args, queue=queue) writes to the Redis list."""
        from celery.utils.nodenames import anon_nodename

        task_id = str(uuid.uuid4())
        args = execute_args(run)
        body = json.dumps([args, {}, _EMBED]).encode()
        headers = {
            "lang": "py", "task": EXECUTE, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}", "origin": anon_nodename(),
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        }
        properties = {
            "correlation_id": task_id, "reply_to": self.celery.thread_oid, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0, "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        return json.dumps({"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                           "content-type": "application/json", "headers": headers, "properties": properties})
