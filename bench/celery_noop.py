"""A bare Celery app with one no-op task: the queue round-trip baseline for bench.run_latency.

Same broker kind (Redis) and the same worker-side settings as the agentruns worker (threads pool,
acks_late, prefetch 1), plus a Redis result backend so the caller can wait for the result.
The broker URL comes from BENCH_CELERY_URL; the worker runs as
`celery -A bench.celery_noop worker --pool threads -Q bench-noop`.
"""
from __future__ import annotations

import os

from celery import Celery

QUEUE = "bench-noop"

app = Celery("bench_noop", broker=os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/2"),
             backend=os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/2"), set_as_current=False)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue=QUEUE,
                task_serializer="json", accept_content=["json"], result_serializer="json",
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing: the round trip is all queue and result backend."""
    return None
