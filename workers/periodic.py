"""Periodic housekeeping run by `agentruns beat`: reap lost runs, re-enqueue stranded ones, purge keys."""
from __future__ import annotations

import logging

from app import db, runstate
from app.enqueue import Queued, enqueue
from app.idempotency import purge_expired
from app.models import FAILED, Device
from app.notify import publish
from app.services import device_config as devices
from drivers import get_driver
from workers import context, metrics

log = logging.getLogger("agentruns.beat")


def reap() -> int:
    """Fail runs whose worker stopped renewing the lease, and kill their remote process groups."""
    ctx = context.get()
    with db.session() as s:
        reaped = runstate.reap_expired(s)
    for run in reaped:
        log.warning("run %s: lease expired, marked failed/worker_lost", run.id)
        metrics.REAPED.inc()
        metrics.finished(FAILED, runstate.WORKER_LOST, run.started_at, run.finished_at)
        publish(ctx.redis, run.id, "finished")
        if run.pgid:
            _kill_remote(ctx, run)
    return len(reaped)


def _kill_remote(ctx, run) -> None:
    try:
        with db.session() as s:
            device = s.get(Device, (run.tenant_id, run.target_id))
        if device is not None:
            get_driver(devices.load(device, ctx.settings.secret_key).spec).kill_group(run.pgid)
    except Exception as exc:  # an unreachable device is expected here; the run is failed regardless
        log.warning("run %s: could not kill remote process group %s: %s", run.id, run.pgid, exc)


def sweep(celery) -> int:
    """Re-send queued runs that nobody claimed for a while (the broker was down, a message was lost)."""
    ctx = context.get()
    with db.session() as s:
        stale = runstate.stale_queued(s, ctx.settings.queued_stale_seconds)
    sent = enqueue(celery, [Queued(*row) for row in stale]) if stale else []
    if sent:
        # The API does not stamp a first send (created_at stands for it); a re-send restarts the clock.
        with db.session() as s:
            runstate.mark_enqueued(s, sent)
        log.info("re-enqueued %d stale queued run(s)", len(sent))
        metrics.REENQUEUED.inc(len(sent))
    return len(stale)


def purge_keys() -> int:
    context.get()
    with db.session() as s:
        return purge_expired(s)
