"""Long-poll: hold a request until a run is terminal or time runs out, woken by Redis pub/sub."""
from __future__ import annotations

import time
import uuid

import redis

from app import db
from app.models import TERMINAL, Run
from app.notify import channel


def wait_terminal(r: redis.Redis, run_id: uuid.UUID, seconds: float) -> Run:
    """Return the run once it is terminal, or its state after `seconds`."""
    deadline = time.monotonic() + seconds
    pubsub = None
    try:
        try:
            pubsub = r.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(run_id))
        except redis.RedisError:
            pubsub = None  # fall back to polling the database
        while True:
            with db.session() as s:
                run = s.get(Run, run_id)
            left = deadline - time.monotonic()
            if run.status in TERMINAL or left <= 0:
                return run
            if pubsub is not None:
                try:
                    pubsub.get_message(timeout=min(left, 1.0))
                    continue
                except redis.RedisError:
                    pubsub = None
            time.sleep(min(left, 0.5))
    finally:
        if pubsub is not None:
            try:
                pubsub.close()
            except redis.RedisError:
                pass
