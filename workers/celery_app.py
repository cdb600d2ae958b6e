"""The Celery application: broker settings shared by the API (which only sends) and the workers."""
from __future__ import annotations

from celery import Celery

from app.config import Settings

EXECUTE = "runs.execute"


def make_celery(settings: Settings) -> Celery:
    """Build a Celery app for this configuration; tasks are registered by workers.tasks."""
    app = Celery("agentruns", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a worker that dies mid-run leaves the message for redelivery ...
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # ... and PostgreSQL, not the result backend, is the record
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redelivery only after this long without an ack; runs are fenced anyway (see app.runstate).
        broker_transport_options={"visibility_timeout": 2 * 86400, "socket_connect_timeout": 2,
                                  "socket_timeout": 5},
        worker_hijack_root_logger=False,
        # Warm shutdown (SIGTERM) is bounded by workers.tasks' own grace timer; this gives in-flight
        # runs the same grace when a cold shutdown (a second Ctrl-C) comes first.
        worker_soft_shutdown_timeout=settings.shutdown_grace_seconds,
        worker_enable_soft_shutdown_on_idle=False,
        task_default_queue="agentruns",
        beat_schedule={
            "reap": {"task": "runs.reap", "schedule": settings.reaper_interval_seconds},
            "sweep": {"task": "runs.sweep", "schedule": settings.reaper_interval_seconds},
            "purge-idempotency-keys": {"task": "runs.purge_idempotency_keys", "schedule": 3600.0},
        },
    )
    return app
