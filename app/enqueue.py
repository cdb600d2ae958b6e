"""Send committed runs to the workers. A broker outage never fails the request: the sweeper retries."""
from __future__ import annotations

import logging
import uuid

import redis
from celery import Celery

from workers.celery_app import EXECUTE

log = logging.getLogger("agentruns.enqueue")


def enqueue(celery: Celery, run_ids: list[uuid.UUID], probe: redis.Redis | None = None) -> list[uuid.UUID]:
    """Publish runs.execute for each id (after their rows committed); returns the ids sent.

    `probe` is a fail-fast client on the broker: kombu's own connections retry with backoff for
    about 6 s when Redis is down, which a caller waiting for its 201 should not pay.
    """
    sent = []
    try:
        if probe is not None:
            probe.ping()
        for run_id in run_ids:
            celery.send_task(EXECUTE, args=[str(run_id)], retry=False)
            sent.append(run_id)
    except Exception as exc:  # kombu and redis-py raise several types for an unreachable broker
        log.warning("enqueue failed, the sweeper will retry: %s", type(exc).__name__)
    return sent
