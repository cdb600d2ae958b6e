"""Long-poll: hold a request until a run is terminal or time runs out, woken by Redis pub/sub."""
from __future__ import annotations

import time

import redis

from core import db
from core.models import TERMINAL, Run
from core.notify import channel
from core.services import runs as run_service


def wait_terminal(r: redis.Redis, run: Run, seconds: float) -> Run:
    """Return the run once it is terminal, or its state after `seconds` (`run`: its state as read)."""
    if run.status in TERMINAL:
        return run
    deadline = time.monotonic() + seconds
    pubsub = None
    try:
        try:
            pubsub = r.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(run.id))
        except redis.RedisError:
            pubsub = None  # fall back to polling the database
        while True:
            # Read after subscribing, so a change published just before is not missed.
            with db.engine().connect() as conn:
                run = run_service.get(conn, run.tenant_id, str(run.id))
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
