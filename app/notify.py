"""Wake long-pollers and live viewers: a Redis pub/sub nudge after a commit; the database stays the truth."""
from __future__ import annotations

import logging

import redis

log = logging.getLogger("agentruns.notify")


def channel(run_id) -> str:
    return f"agentruns:run:{run_id}"


def publish(r: redis.Redis, run_id, what: str = "changed") -> None:
    """Best effort: a lost nudge only delays a waiter until its next poll."""
    try:
        r.publish(channel(run_id), what)
    except redis.RedisError as exc:
        log.warning("publish failed for run %s: %s", run_id, exc)
