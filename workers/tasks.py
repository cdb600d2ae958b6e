"""Celery tasks. They take ids, have explicit names, and delegate; the worker never boots the web app.

Start with `agentruns worker` / `agentruns beat`, or `celery -A workers.tasks worker --pool threads`.
"""
from __future__ import annotations

import gc
import logging
import threading

from celery.signals import beat_init, worker_ready, worker_shutting_down
from celery.worker.control import inspect_command

import workers.presence  # noqa: F401 - its worker_ready/worker_shutdown handlers: this worker's heartbeat
from core import db
from core.config import Settings
from core.messages import (
    ATTACH,
    EXECUTE,
    PURGE_IDEMPOTENCY_KEYS,
    REAP,
    SWEEP,
    WEBHOOKS_DISPATCH,
    WEBHOOKS_PURGE,
    make_celery,
)
from workers import broker, context, metrics, periodic, reattach, runner, webhook_dispatch, webhook_kick

log = logging.getLogger("agentruns.worker")

# Building the Celery object connects to nothing; the broker is reached when the worker starts.
celery = make_celery(Settings.from_env())
# kombu's Redis transport, made to survive a broker restart (see workers.broker).
celery.conf.broker_transport = broker.TRANSPORT


@worker_ready.connect
def _freeze_startup_objects(**_) -> None:
    """What start-up imported and built (modules, the Celery app, SQLAlchemy's metadata) lives as long
    as the process: frozen out of the collector's generations, it is not walked again by every full
    collection that a thousand run threads' allocations trigger."""
    gc.freeze()


@celery.task(name=EXECUTE)
def execute(run_id: str, tenant_id: str | None = None, device_id: str | None = None) -> str:
    # tenant_id/device_id name the run's device so the worker need not read the run first; a
    # message with the run id alone (an older API) still works.
    try:
        outcome = runner.execute(run_id, tenant_id, device_id)
    except BaseException:
        metrics.DELIVERIES.labels("error").inc()
        raise
    metrics.DELIVERIES.labels(outcome.partition(":")[0].replace("-", "_")).inc()
    return outcome


@celery.task(name=ATTACH)
def attach(run_id: str) -> str:
    # A run taken over from a lost worker: re-attach to its command (never start it again).
    return reattach.attach(run_id)


@celery.task(name=REAP)
def reap() -> int:
    return periodic.reap(celery)


@celery.task(name=SWEEP)
def sweep() -> int:
    return periodic.sweep(celery)


@celery.task(name=PURGE_IDEMPOTENCY_KEYS)
def purge_idempotency_keys() -> int:
    return periodic.purge_keys()


@celery.task(name=WEBHOOKS_DISPATCH)
def dispatch_webhooks() -> int | None:
    # Sends what is due for a while; a call while this process's loop runs only wakes that loop.
    result = webhook_dispatch.dispatcher().run()
    if result is None:
        return None
    attempts, backlog = result
    if backlog:  # the loop's time was up with deliveries due: the next loop starts now, not at beat's next tick
        celery.send_task(WEBHOOKS_DISPATCH, retry=False)
    return attempts


@celery.task(name=WEBHOOKS_PURGE)
def purge_webhook_events() -> int:
    settings = Settings.from_env()
    db.init(settings.database_url)
    return webhook_dispatch.purge(settings.webhook_retention_days)


@inspect_command()
def runs(state) -> list[dict]:
    """The runs this worker holds now: `celery -A workers.tasks inspect runs` (`inspect active` lists the
    runs.execute deliveries, and one delivery serves its device's queued runs one after another)."""
    held = list(context.get().supervisor.active.values())
    return [{"run_id": str(r.run_id), "epoch": r.epoch, "pgid": r.pgid,
             "started_at": r.started_at.isoformat() if r.started_at else None, "device_slot": r.slot_key}
            for r in held]


@beat_init.connect
def _listen_for_webhook_events(**_):
    """Beat also wakes the dispatcher at once when the outbox gets events (workers.webhook_kick)."""
    webhook_kick.start(celery, Settings.from_env())


@worker_shutting_down.connect
def _grace_then_stop(**_):
    """Warm shutdown: in-flight runs get the grace period; then ssh runs are handed over (another worker
    re-attaches), others are killed and recorded worker_shutdown."""
    grace = Settings.from_env().shutdown_grace_seconds
    context.get().supervisor.draining = True  # serve loops finish their run and claim no more

    def stop_after_grace():
        threading.Event().wait(grace)
        log.warning("shutdown grace (%ss) over: stopping in-flight runs", grace)
        context.get().supervisor.stop_all("worker_shutdown")

    threading.Thread(target=stop_after_grace, name="agentruns-shutdown", daemon=True).start()
