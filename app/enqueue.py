"""Send committed runs to the workers. A broker outage never fails the request: the sweeper retries."""
from __future__ import annotations

import logging
import uuid
from typing import NamedTuple

import redis
from celery import Celery

from workers.celery_app import EXECUTE

log = logging.getLogger("agentruns.enqueue")


class Queued(NamedTuple):
    """What a worker needs to find a run's device without reading the run first."""

    run_id: uuid.UUID
    tenant_id: uuid.UUID
    device_id: str


def enqueue(celery: Celery, runs: list[Queued], probe: redis.Redis | None = None) -> list[uuid.UUID]:
    """Publish runs.execute(run_id, tenant_id, device_id) for each run (after their rows committed);
    returns the ids sent.

    `probe` is a fail-fast client on the broker: kombu's own connections retry with backoff for
    about 6 s when Redis is down, which a caller waiting for its 201 should not pay.
    """
    sent = []
    try:
        if probe is not None:
            probe.ping()
        for run in runs:
            celery.send_task(EXECUTE, args=[str(run.run_id), str(run.tenant_id), run.device_id], retry=False)
            sent.append(run.run_id)
    except Exception as exc:  # kombu and redis-py raise several types for an unreachable broker
        log.warning("enqueue failed, the sweeper will retry: %s", type(exc).__name__)
    return sent
