"""Execute runs: claim (fenced), lease, run on the device through a driver, parse, record.

One delivery of `runs.execute(run_id)` means "make progress on this run's device": it takes a device
slot, claims the device's *oldest* queued run (so a device starts runs in creation order), executes
it, and repeats while the device has queued runs. A delivery that finds its run no longer queued is a
duplicate: it never runs that run again, and only serves the device's queue if runs are waiting.
"""
from __future__ import annotations

import logging
import uuid
from functools import partial

from sqlalchemy import exists, select

from app import db, runstate
from app.crypto import decrypt_json
from app.models import CANCELED, FAILED, QUEUED, SUCCEEDED, Device, Run
from app.notify import publish
from app.services import device_config as devices
from drivers import get_driver
from drivers.base import DriverError, ExecRequest
from providers import get_provider
from providers.base import RunSpec
from workers import context
from workers.leases import new_token, run_lock_key, slots_key
from workers.supervisor import ActiveRun

log = logging.getLogger("agentruns.worker")


def execute(run_id: str, tenant_id: str | None = None, device_id: str | None = None) -> str:
    """Task body of runs.execute; returns what happened ("duplicate", "busy", "executed:N", "missing")."""
    ctx = context.get()
    with db.session() as s:
        run = s.get(Run, uuid.UUID(run_id))
    if run is None:
        return "missing"
    if run.status != QUEUED:
        log.info("duplicate delivery: run %s is %s; nothing to do for it", run_id, run.status)
        # Another delivery may have claimed this run in place of its own (claims take the device's
        # oldest run), leaving that one without a delivery: so still serve the device's queue.
        if not _has_queued(run.tenant_id, run.target_id):
            return "duplicate"
    with db.session() as s:
        device = s.get(Device, (run.tenant_id, run.target_id))
    if device is None:
        return "missing"
    executed = rechecks = 0
    while True:
        outcome = _start_next(ctx, device)
        if outcome == RAN:
            executed, rechecks = executed + 1, 0
            continue
        # A run can commit while we hold a slot and find nothing to claim; its own delivery then
        # sees the device full and leaves it to the slot holders. So a holder that found nothing
        # looks again after releasing its slot, or that run would wait for the sweeper.
        if outcome == EMPTY and rechecks < 3 and _has_queued(run.tenant_id, run.target_id):
            rechecks += 1
            continue
        return f"executed:{executed}" if executed else "busy"


RAN, FULL, EMPTY = "ran", "full", "empty"


def _has_queued(tenant_id: uuid.UUID, device_id: str) -> bool:
    with db.session() as s:
        return s.execute(select(exists().where(Run.tenant_id == tenant_id, Run.target_id == device_id,
                                               Run.status == QUEUED))).scalar_one()


def _start_next(ctx, device: Device) -> str:
    """Run the device's oldest queued run if a slot is free: RAN, FULL (no slot) or EMPTY (nothing to claim)."""
    tenant_id, device_id = device.tenant_id, device.id
    ttl_ms = ctx.settings.lease_seconds * 1000
    slot_key, slot_token = slots_key(tenant_id, device_id), new_token()
    if not ctx.leases.acquire_slot(slot_key, device.max_concurrent_runs, slot_token, ttl_ms):
        return FULL  # whoever holds a slot starts the next run when it is done
    try:
        with db.session() as s:
            run = runstate.claim_next(s, tenant_id, device_id, ctx.worker_id, ctx.settings.lease_seconds)
        if run is None:
            return EMPTY
        lock_key, lock_token = run_lock_key(run.id), new_token()
        if not ctx.leases.lock(lock_key, lock_token, ttl_ms):
            with db.session() as s:
                runstate.unclaim(s, run.id, run.epoch)
            return EMPTY
        active = ActiveRun(run.id, run.epoch, lock_key, lock_token, slot_key, slot_token)
        ctx.supervisor.add(active)
        try:
            _execute_claimed(ctx, run, device, active)
        finally:
            ctx.supervisor.remove(active)
            ctx.leases.unlock(lock_key, lock_token)
        return RAN
    finally:
        ctx.leases.release_slot(slot_key, slot_token)


def _execute_claimed(ctx, run: Run, device: Device, active: ActiveRun) -> None:
    settings = ctx.settings
    cfg = devices.load(device, settings.secret_key)
    provider = get_provider(run.provider)
    invocation = provider.build(RunSpec(
        run_id=str(run.id), prompt=run.prompt, model=run.model, command=run.command,
        device_username=cfg.username, settings=cfg.provider_settings(run.provider)))
    # Layering: device env, then the provider's (with its per-device settings), then the run's own.
    env = {**cfg.env, **invocation.env, **decrypt_json(settings.secret_key, run.env_enc)}
    request = ExecRequest(argv=invocation.argv, cwd=run.cwd, env=env, stdin=invocation.stdin,
                          timeout=float(run.timeout), kill_grace=settings.kill_grace_seconds,
                          output_cap=settings.output_cap_bytes)
    driver = get_driver(cfg.spec, on_host_key=devices.pin_host_key(device.tenant_id, device.id))

    def on_start(pgid: int) -> None:
        with db.session() as s:
            runstate.mark_started(s, run.id, run.epoch, pgid, runstate.utcnow())

    try:
        result = driver.run(request, on_output=partial(ctx.supervisor.output, active), on_start=on_start,
                            cancel=active.stop)
    except DriverError as exc:
        active.finishing = True
        if exc.pgid:  # the connection dropped mid-run: the command may still be running there
            _kill_quietly(driver, exc.pgid, run.id)
        if active.stop_reason != "lease_lost":
            ctx.supervisor.flush_events([active])
            _finish(ctx, run, FAILED, error={"code": exc.code, "message": exc.message})
        return
    active.finishing = True
    if active.stop_reason == "lease_lost":
        return  # another epoch owns the run now: write nothing
    ctx.supervisor.flush_events([active])  # every output event precedes the terminal status event
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    parsed = provider.parse(result.exit_code, stdout, stderr)
    fields = dict(output=parsed.output, stdout=stdout, stderr=stderr, exit_code=result.exit_code,
                  stdout_truncated=result.stdout_truncated, stderr_truncated=result.stderr_truncated,
                  usage=parsed.usage, cost_usd=parsed.cost_usd, session_id=parsed.session_id,
                  started_at=result.started_at, finished_at=result.finished_at or runstate.utcnow())
    status, error = _outcome(result.killed, active.stop_reason, parsed, run.timeout)
    _finish(ctx, run, status, error=error, **fields)


def _kill_quietly(driver, pgid: int, run_id) -> None:
    try:
        driver.kill_group(pgid)
    except Exception as exc:  # the device may be unreachable now; the record says connection_lost
        log.warning("run %s: could not kill process group %s after a lost connection: %s", run_id, pgid, exc)


def _outcome(killed: str | None, stop_reason: str | None, parsed, timeout: int) -> tuple[str, dict | None]:
    """Map how the process ended and what the provider parsed to a status and an error."""
    if stop_reason == "worker_shutdown":
        return FAILED, {"code": "worker_shutdown", "message": "the worker shut down before the run finished"}
    if killed == "canceled" or stop_reason == "canceled":
        return CANCELED, {"code": "canceled", "message": "canceled by request"}
    if killed == "timeout":
        return FAILED, {"code": "timeout", "message": f"timed out after {timeout} s; the process tree was killed"}
    if parsed.succeeded:
        return SUCCEEDED, None
    return FAILED, {"code": parsed.error_code or "nonzero_exit",
                    "message": parsed.error_message or "the command failed"}


def _finish(ctx, run: Run, status: str, **fields) -> None:
    """Record the outcome, fenced by the epoch we hold, and wake whoever waits for it."""
    with db.session() as s:
        row = runstate.finish(s, run.id, run.epoch, status, **fields)
    if row is None:
        log.warning("run %s epoch %s: result not recorded, the run moved on without us", run.id, run.epoch)
        return
    publish(ctx.redis, run.id, "finished")
    log.info("run %s %s", run.id, status)
