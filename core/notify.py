"""Wake long-pollers and live viewers: a Redis pub/sub nudge after a commit; the database stays the truth."""
from __future__ import annotations

import logging

import redis

log = logging.getLogger("agentruns.notify")


# Workers listen here so a cancel reaches the run's worker at once, not at its next heartbeat.
CANCEL_CHANNEL = "agentruns:cancel"


def channel(run_id) -> str:
    return f"agentruns:run:{run_id}"


def publish(r: redis.Redis, run_id, what: str = "changed") -> None:
    """Best effort: a lost nudge only delays a waiter until its next poll."""
    _publish(r, channel(run_id), what, run_id)


def publish_cancel(r: redis.Redis, run_id) -> None:
    """Tell the workers a running run was asked to stop (the heartbeat would see it a second later)."""
    _publish(r, CANCEL_CHANNEL, str(run_id), run_id)


def _publish(r: redis.Redis, name: str, message: str, run_id) -> None:
    try:
        r.publish(name, message)
    except redis.RedisError as exc:
        log.warning("publish failed for run %s: %s", run_id, exc)
