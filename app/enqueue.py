"""Send committed runs to the workers. A broker outage never fails the request: the sweeper retries."""
from __future__ import annotations

import logging
import uuid
from typing import NamedTuple

from celery import Celery

from workers.celery_app import EXECUTE

log = logging.getLogger("agentruns.enqueue")


class Queued(NamedTuple):
    """What a worker needs to find a run's device without reading the run first."""

    run_id: uuid.UUID
    tenant_id: uuid.UUID
    device_id: str


def enqueue(celery: Celery, runs: list[Queued]) -> list[uuid.UUID]:
    """Publish runs.execute(run_id, tenant_id, device_id) for each run (after their rows committed);
    returns the ids sent.

    A caller waiting for its answer should pass a Celery app built by `fail_fast()`.
    """
    sent = []
    try:
        for run in runs:
            celery.send_task(EXECUTE, args=[str(run.run_id), str(run.tenant_id), run.device_id], retry=False)
            sent.append(run.run_id)
    except Exception as exc:  # kombu and redis-py raise several types for an unreachable broker
        log.warning("enqueue failed, the sweeper will retry: %s", type(exc).__name__)
    return sent


def fail_fast(celery: Celery) -> Celery:
    """Make `celery` give up on the first failed broker connection.

    kombu otherwise retries a connection with backoff for about 6 s when Redis is down (once a pooled
    connection failed, or before the first one), which a caller waiting for its 201 should not pay.
    Only for an app that sends: a worker must keep retrying its consumer connection.
    """
    celery.conf.broker_transport_options = {**celery.conf.broker_transport_options, "max_retries": 0}
    return celery
