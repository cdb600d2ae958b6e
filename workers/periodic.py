"""Periodic housekeeping run by `agentruns beat`: hand lost runs over (or reap them), re-enqueue
stranded ones, purge keys."""
from __future__ import annotations

import logging

from core import db, device_networks, runstate
from core.idempotency import purge_expired
from core.messages import Queued, enqueue, enqueue_attach
from core.models import CANCELED, Device
from core.notify import publish
from core.services import device_config as devices
from drivers import get_driver
from workers import context, metrics
from workers.runner import wake_throttled

log = logging.getLogger("agentruns.beat")


# A run stays attachable this long past its timeout: its remote backstop ends it REMOTE_BACKSTOP
# seconds (plus the kill grace) after the timeout, and its device may then still be unreachable.
REMOTE_BACKSTOP = 30.0


def reap(celery) -> int:
    """Runs whose worker stopped renewing the lease: those whose command can be re-attached are taken
    over and sent to runs.attach; the others fail worker_lost and their remote groups are killed."""
    ctx = context.get()
    s = ctx.settings
    slack = s.kill_grace_seconds + REMOTE_BACKSTOP + s.device_lost_seconds
    with db.transaction() as conn:
        reaped, taken = runstate.reap_expired(conn, s.lease_seconds, slack)
    if taken:
        log.warning("run(s) %s: lease expired, taken over for re-attaching", ", ".join(str(r.id) for r in taken))
        enqueue_attach(celery, [(r.id, r.pool) for r in taken])
    for run in reaped:
        log.warning("run %s: lease expired, marked canceled/worker_lost", run.id)
        metrics.REAPED.inc()
        metrics.finished(CANCELED, runstate.WORKER_LOST, run.started_at, run.finished_at)
        publish(ctx.redis, run.id, "finished")
        if s.tenant_max_in_flight:  # its share is free again: a device that waited for it is sent
            wake_throttled(ctx, run.tenant_id)
        if run.pgid:
            _kill_remote(ctx, run)
    return len(reaped) + len(taken)


def _kill_remote(ctx, run) -> None:
    try:
        with db.session() as s:
            device = s.get(Device, (run.tenant_id, run.target_id))
        if device is not None:
            cfg = devices.load(device, ctx.settings.secret_key, networks=device_networks.policy(ctx.settings))
            get_driver(cfg.spec).kill_group(run.pgid)
    except Exception as exc:  # an unreachable device is expected here; the run is failed regardless
        log.warning("run %s: could not kill remote process group %s: %s", run.id, run.pgid, exc)


def sweep(celery) -> int:
    """Re-send queued runs that nobody claimed for a while (the broker was down, a message was lost)."""
    ctx = context.get()
    with db.transaction() as conn:
        stale = runstate.stale_queued(conn, ctx.settings.queued_stale_seconds)
    sent = enqueue(celery, [Queued(*row) for row in stale]) if stale else []
    if sent:
        # The API does not stamp a first send (created_at stands for it); a re-send restarts the clock.
        with db.transaction() as conn:
            runstate.mark_enqueued(conn, sent)
        log.info("re-enqueued %d stale queued run(s)", len(sent))
        metrics.REENQUEUED.inc(len(sent))
    return len(stale)


def purge_keys() -> int:
    context.get()
    with db.session() as s:
        return purge_expired(s)
