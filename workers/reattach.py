"""Re-attach to a run taken over from a lost worker (runs.attach): follow it to its end and record it,
never starting it again. The reaper hands such runs over (core.runstate.take_over); the command goes
on meanwhile on the device, detached, writing to its spool (drivers/ssh_spool.py).
"""
from __future__ import annotations

import uuid

from core import db, log_context, runstate
from core.models import FAILED
from core.notify import channel
from drivers import AttachTicket
from workers import context
from workers.leases import Slot, new_token, pending_key, run_lock_key, slots_key
from workers.runner import Outcome, execute, quietly, record, run_on_device
from workers.supervisor import ActiveRun


def attach(run_id: str) -> str:
    """Task body of runs.attach: re-attach to a run taken over from a lost worker, follow it to its end
    and record it, never starting it again; then serve the device's queue as runs.execute would.

    Returns "attached", or "nothing-to-attach" (a duplicate message: another worker has it, or it ended).
    """
    ctx = context.get()
    settings = ctx.settings
    with db.transaction() as conn:
        run = runstate.claim_attach(conn, uuid.UUID(run_id), ctx.worker_id, settings.lease_seconds)
    if run is None:
        return "nothing-to-attach"
    with log_context.bind(run_id=run.id, tenant_id=run.tenant_id, device_id=run.target_id):
        return _attach(ctx, run)


def _attach(ctx, run) -> str:
    settings = ctx.settings
    device = ctx.devices.get(run.tenant_id, run.target_id)
    device = ctx.devices.current(device, run.device_version) if device is not None else None
    if device is None:  # the API refuses to delete a device with live runs; a race
        record(ctx, run, None, None, Outcome(FAILED, dict(
            error={"code": "device_not_found", "message": "the device was deleted while the run was taken over"},
            pgid=run.pgid, started_at=run.started_at)))
        return "attached"
    ttl_ms = settings.lease_seconds * 1000
    # The command runs on the device whatever the slots say; a slot, when one is free, keeps the
    # device's limit for runs starting meanwhile. The lost worker's lock may linger in Redis until
    # it lapses: the epoch, not the lock, fences this run's writes.
    slot = Slot(slots_key(run.tenant_id, run.target_id), new_token(), pending_key(run.tenant_id, run.target_id))
    held = bool(quietly(ctx.leases.acquire_slot, slot, device.max_concurrent_runs, ttl_ms))
    lock_key, token = run_lock_key(run.id), new_token()
    token = token if quietly(ctx.leases.lock, lock_key, token, ttl_ms) else ""
    active = ActiveRun(run.id, run.epoch, lock_key, token, slot.key if held else "", slot.token,
                       pgid=run.pgid, started_at=run.started_at, start_recorded=True,
                       stdout_offset=run.stdout_offset or 0, stderr_offset=run.stderr_offset or 0,
                       events_written=run.output_events,
                       events_dropped=run.output_events >= settings.max_events_per_run)
    if run.cancel_requested:
        active.request_stop("canceled")
    ticket = AttachTicket(run.pgid, run.started_at, active.stdout_offset, active.stderr_offset)
    ctx.supervisor.add(active)
    try:
        outcome = run_on_device(ctx, run, device, active, ticket)
        if outcome is not None:
            record(ctx, run, active, None, outcome)
    finally:
        ctx.supervisor.remove(active)
        quietly(ctx.leases.unlock, lock_key, token, notify=channel(run.id))
        pending = held and quietly(ctx.leases.release_slot, slot)
    if pending and not ctx.supervisor.draining:
        execute(str(run.id), str(run.tenant_id), run.target_id)
    return "attached"
