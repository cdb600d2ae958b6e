"""Send committed runs to the workers. A broker outage never fails the request: the sweeper retries."""
from __future__ import annotations

import logging
import uuid

from celery import Celery

from app import db, runstate
from workers.celery_app import EXECUTE

log = logging.getLogger("agentruns.enqueue")


def enqueue(celery: Celery, run_ids: list[uuid.UUID]) -> bool:
    """Publish runs.execute for each id (after their rows committed); False if the broker was down."""
    sent = []
    try:
        for run_id in run_ids:
            celery.send_task(EXECUTE, args=[str(run_id)], retry=False)
            sent.append(run_id)
    except Exception as exc:  # kombu raises several types for an unreachable broker
        log.warning("enqueue failed, the sweeper will retry: %s", type(exc).__name__)
    if sent:
        with db.session() as s:
            runstate.mark_enqueued(s, sent)
    return len(sent) == len(run_ids)
