"""The message contract between the API and the workers: task names, arguments, the queue, the
broker settings, and the enqueue call. Both sides build their Celery app from `make_celery`, so
they cannot disagree; a broker outage never fails a request (the sweeper re-sends).
"""
from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, NamedTuple

from core.config import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("agentruns.enqueue")

# runs.execute(run_id, tenant_id, device_id): make progress on that run's device. Workers also accept
# the older one-argument form runs.execute(run_id).
EXECUTE = "runs.execute"
# runs.attach(run_id): re-attach to a run taken over from a lost worker (the reaper sends it).
ATTACH = "runs.attach"
REAP = "runs.reap"
SWEEP = "runs.sweep"
PURGE_IDEMPOTENCY_KEYS = "runs.purge_idempotency_keys"
QUEUE = "agentruns"
# webhooks.dispatch(): send the webhook deliveries that are due (workers.webhook_dispatch). Kicked when
# the outbox trigger NOTIFYs WEBHOOK_CHANNEL (workers.webhook_kick, in beat), and every few seconds by
# beat for retries. On its own queue, so that a worker pool can be given to webhooks alone.
WEBHOOKS_DISPATCH = "webhooks.dispatch"
WEBHOOKS_PURGE = "webhooks.purge"
WEBHOOK_QUEUE = "agentruns.webhooks"
WEBHOOK_CHANNEL = "agentruns_webhooks"  # the NOTIFY channel of migration 0006's trigger


DEFAULT_POOL = "default"
POOL_QUEUE_PREFIX = "agentruns.pool."


def queue_for(pool: str) -> str:
    """The queue of a worker pool: `agentruns` for the default pool (as before pools), else
    `agentruns.pool.NAME`. `agentruns worker --pool NAME` consumes it."""
    return QUEUE if pool == DEFAULT_POOL else POOL_QUEUE_PREFIX + pool


def pool_allowed(pool: str, allowed: str) -> bool:
    """Whether devices may be put in `pool`: the default one, or one the operator listed
    (AGENTRUNS_POOLS, comma-separated; `*` allows any name)."""
    names = {name.strip() for name in allowed.split(",") if name.strip()}
    return pool == DEFAULT_POOL or "*" in names or pool in names


class Queued(NamedTuple):
    """What a worker needs to find a run's device without reading the run first, and where to send it."""

    run_id: uuid.UUID
    tenant_id: uuid.UUID
    device_id: str
    pool: str = DEFAULT_POOL


def execute_args(run: Queued) -> list[str]:
    """The arguments of one runs.execute message (JSON-serialisable)."""
    return [str(run.run_id), str(run.tenant_id), run.device_id]


def make_celery(settings: Settings) -> Celery:
    """A Celery app for this configuration; tasks are registered by workers.tasks. Connects to nothing."""
    from celery import Celery

    app = Celery("agentruns", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        # kombu's Redis transport with a client per channel, not per publish (resolved by name when
        # the app first connects: importing kombu here would slow every CLI command).
        broker_transport="core.broker_transport:Transport",
        task_acks_late=True,  # a worker that dies mid-run leaves the message for redelivery ...
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # ... and PostgreSQL, not the result backend, is the record
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redelivery only after this long without an ack; runs are fenced anyway (see core.runstate).
        broker_transport_options={"visibility_timeout": 2 * 86400, "socket_connect_timeout": 2,
                                  "socket_timeout": 5},
        worker_hijack_root_logger=False,
        # Warm shutdown (SIGTERM) is bounded by workers.tasks' own grace timer; this gives in-flight
        # runs the same grace when a cold shutdown (a second Ctrl-C) comes first.
        worker_soft_shutdown_timeout=settings.shutdown_grace_seconds,
        worker_enable_soft_shutdown_on_idle=False,
        task_default_queue=QUEUE,
        task_routes={WEBHOOKS_DISPATCH: {"queue": WEBHOOK_QUEUE}, WEBHOOKS_PURGE: {"queue": WEBHOOK_QUEUE}},
        beat_schedule={
            "reap": {"task": REAP, "schedule": settings.reaper_interval_seconds},
            "sweep": {"task": SWEEP, "schedule": settings.reaper_interval_seconds},
            "purge-idempotency-keys": {"task": PURGE_IDEMPOTENCY_KEYS, "schedule": 3600.0},
            "webhooks-dispatch": {"task": WEBHOOKS_DISPATCH, "schedule": 5.0},
            "webhooks-purge": {"task": WEBHOOKS_PURGE, "schedule": 3600.0},
        },
    )
    return app


def fail_fast(celery: Celery) -> Celery:
    """Make `celery` give up on the first failed broker connection.

    kombu otherwise retries a connection with backoff for about 6 s when Redis is down (once a pooled
    connection failed, or before the first one), which a caller waiting for its 201 should not pay.
    Only for an app that sends: a worker must keep retrying its consumer connection.
    """
    celery.conf.broker_transport_options = {**celery.conf.broker_transport_options, "max_retries": 0}
    return celery


def enqueue_attach(celery: Celery, runs: list[tuple[uuid.UUID, str]]) -> list[uuid.UUID]:
    """Publish runs.attach for each run taken over, (run id, its device's pool) each, to that pool's
    queue; returns the ids sent (a run not sent is taken over again, and sent again, once its renewed
    lease lapses)."""
    sent = []
    try:
        for run_id, pool in runs:
            celery.send_task(ATTACH, args=[str(run_id)], retry=False, queue=queue_for(pool))
            sent.append(run_id)
    except Exception as exc:  # kombu and redis-py raise several types for an unreachable broker
        log.warning("enqueue of runs.attach failed, the reaper will retry: %s", type(exc).__name__)
    return sent


def enqueue(celery: Celery, runs: list[Queued], countdown: float | None = None) -> list[uuid.UUID]:
    """Publish runs.execute for each run (after their rows committed), after `countdown` seconds if
    given; returns the ids sent.

    A caller waiting for its answer should pass a Celery app built by `fail_fast()`.
    """
    sent = []
    try:
        for run in runs:
            celery.send_task(EXECUTE, args=execute_args(run), retry=False, countdown=countdown,
                             queue=queue_for(run.pool))
            sent.append(run.run_id)
    except Exception as exc:  # kombu and redis-py raise several types for an unreachable broker
        log.warning("enqueue failed, the sweeper will retry: %s", type(exc).__name__)
    return sent
