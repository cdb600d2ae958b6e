"""Execute runs: claim (fenced), lease, run on the device through a driver, parse, record.

One delivery of `runs.execute(run_id, tenant_id, device_id)` means "make progress on this run's
device": it takes one of the device's slots, claims the device's *oldest* queued run (so a device
starts runs in creation order), executes it, and repeats while the device has queued runs. A
delivery whose run was already claimed (a duplicate, or served by another delivery) claims nothing
and leaves the device untouched, unless other runs are waiting.
"""
from __future__ import annotations

import logging
import uuid
from functools import partial

from sqlalchemy import exists, insert, select

from app import db, runstate
from app.crypto import decrypt_json
from app.models import CANCELED, FAILED, QUEUED, SUCCEEDED
from app.notify import publish
from app.services import device_config
from drivers import get_driver
from drivers.base import DriverError, ExecRequest
from providers import get_provider
from providers.base import RunSpec
from workers import context
from workers.device_cache import CachedDevice
from workers.leases import Slot, new_token, run_lock_key, slots_key
from workers.supervisor import ActiveRun

log = logging.getLogger("agentruns.worker")


def execute(run_id: str, tenant_id: str | None = None, device_id: str | None = None) -> str:
    """Task body of runs.execute; returns what happened ("executed:N", "busy", "nothing-queued", "missing")."""
    ctx = context.get()
    if tenant_id is None or device_id is None:  # a message from an older API names only the run
        with db.transaction() as conn:
            found = conn.execute(select(runstate.runs.c.tenant_id, runstate.runs.c.target_id)
                                 .where(runstate.runs.c.id == uuid.UUID(run_id))).first()
        if found is None:
            return "missing"
        tenant, device_id = found
    else:
        tenant = uuid.UUID(tenant_id)
    executed = rechecks = 0
    while True:
        device = ctx.devices.get(tenant, device_id)
        if device is None:
            return "missing"
        served = _serve(ctx, device)
        if served is None:
            break  # no free slot: whoever holds one starts the next run when it is done
        executed += served
        # A run can commit while we hold a slot, after our last claim found nothing; its own delivery
        # then sees the device full and leaves it to the slot holders. So a holder that found nothing
        # looks again after releasing its slot, or that run would wait for the sweeper.
        if rechecks < 3 and _has_queued(tenant, device_id):
            rechecks += 1
            continue
        break
    if executed:
        return f"executed:{executed}"
    if served is None:
        return "busy"
    # Its run was claimed by a delivery already serving the device, finished, or canceled.
    log.info("delivery of run %s: nothing queued on its device (a duplicate delivery, or already served)", run_id)
    return "nothing-queued"


def _has_queued(tenant_id: uuid.UUID, device_id: str) -> bool:
    runs = runstate.runs
    with db.transaction() as conn:
        return conn.execute(select(exists().where(runs.c.tenant_id == tenant_id, runs.c.target_id == device_id,
                                                  runs.c.status == QUEUED))).scalar_one()


def _serve(ctx, device: CachedDevice) -> int | None:
    """Hold one of the device's slots and run its queued runs, oldest first, until none is left.

    Returns how many ran, or None when all of the device's slots were taken.
    """
    ttl_ms = ctx.settings.lease_seconds * 1000
    slot = Slot(slots_key(device.tenant_id, device.id), new_token())
    if not ctx.leases.acquire_slot(slot.key, device.max_concurrent_runs, slot.token, ttl_ms):
        return None
    executed = 0
    try:
        while True:
            with db.transaction() as conn:
                run = runstate.claim_next(conn, device.tenant_id, device.id, ctx.worker_id,
                                          ctx.settings.lease_seconds)
            if run is None:
                return executed
            device = ctx.devices.current(device, run.device_version)
            if device is None:  # deleted while its run was queued (the API refuses that; a race)
                _finish(ctx, run, FAILED, error={"code": "device_not_found",
                                                 "message": "the device was deleted before the run started"})
                continue
            if not _run_claimed(ctx, run, device, slot):
                return executed
            executed += 1
    finally:
        ctx.leases.release_slot(slot.key, slot.token)


def _run_claimed(ctx, run, device: CachedDevice, slot: Slot) -> bool:
    """Execute a claimed run under its Redis lock; False if another worker holds that lock."""
    lock_key, lock_token = run_lock_key(run.id), new_token()
    if not ctx.leases.lock(lock_key, lock_token, ctx.settings.lease_seconds * 1000):
        # A worker of an earlier epoch still holds the run (its lease has not lapsed in Redis):
        # give the run back untouched and stop serving this device for now.
        with db.transaction() as conn:
            runstate.unclaim(conn, run.id, run.epoch)
        return False
    active = ActiveRun(run.id, run.epoch, lock_key, lock_token, slot.key, slot.token)
    ctx.supervisor.add(active)
    try:
        _execute_claimed(ctx, run, device, active)
    finally:
        ctx.supervisor.remove(active)
        ctx.leases.unlock(lock_key, lock_token)
    return True


def _execute_claimed(ctx, run, device: CachedDevice, active: ActiveRun) -> None:
    settings, cfg = ctx.settings, device.config
    provider = get_provider(run.provider)
    invocation = provider.build(RunSpec(
        run_id=str(run.id), prompt=run.prompt, model=run.model, command=run.command,
        device_username=cfg.username, settings=cfg.provider_settings(run.provider)))
    # Layering: device env, then the provider's (with its per-device settings), then the run's own.
    env = {**cfg.env, **invocation.env, **decrypt_json(settings.secret_key, run.env_enc)}
    request = ExecRequest(argv=invocation.argv, cwd=run.cwd, env=env, stdin=invocation.stdin,
                          timeout=float(run.timeout), kill_grace=settings.kill_grace_seconds,
                          output_cap=settings.output_cap_bytes)
    driver = get_driver(cfg.spec, on_host_key=device_config.pin_host_key(device.tenant_id, device.id))

    def on_start(pgid: int) -> None:
        with db.transaction() as conn:
            runstate.mark_started(conn, run.id, run.epoch, pgid, runstate.utcnow())

    try:
        result = driver.run(request, on_output=partial(ctx.supervisor.output, active), on_start=on_start,
                            cancel=active.stop)
    except DriverError as exc:
        active.finishing = True
        if exc.pgid:  # the connection dropped mid-run: the command may still be running there
            _kill_quietly(driver, exc.pgid, run.id)
        if active.stop_reason != "lease_lost":
            _finish(ctx, run, FAILED, active, error={"code": exc.code, "message": exc.message})
        return
    active.finishing = True
    if active.stop_reason == "lease_lost":
        return  # another epoch owns the run now: write nothing
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    parsed = provider.parse(result.exit_code, stdout, stderr)
    fields = dict(output=parsed.output, stdout=stdout, stderr=stderr, exit_code=result.exit_code,
                  stdout_truncated=result.stdout_truncated, stderr_truncated=result.stderr_truncated,
                  usage=parsed.usage, cost_usd=parsed.cost_usd, session_id=parsed.session_id,
                  pgid=result.pgid, started_at=result.started_at,
                  finished_at=result.finished_at or runstate.utcnow())
    status, error = _outcome(result.killed, active.stop_reason, parsed, run.timeout)
    _finish(ctx, run, status, active, error=error, **fields)


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


def _finish(ctx, run, status: str, active: ActiveRun | None = None, **fields) -> None:
    """Record the outcome, fenced by the epoch we hold, and wake whoever waits for it.

    The run's last output events go into the same transaction, before its terminal status event.
    """
    with ctx.supervisor.final_events(active) as events, db.transaction() as conn:
        if events:
            conn.execute(insert(runstate.run_events), events)
        row = runstate.finish(conn, run.id, run.epoch, status, **fields)
    if row is None:
        log.warning("run %s epoch %s: result not recorded, the run moved on without us", run.id, run.epoch)
        return
    publish(ctx.redis, run.id, "finished")
    log.info("run %s %s", run.id, status)
