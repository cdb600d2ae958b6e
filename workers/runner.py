"""Execute runs: claim (fenced), lease, run on the device through a driver, parse, record.

One delivery of `runs.execute(run_id, tenant_id, device_id)` means "make progress on this run's
device": it takes one of the device's slots, claims the device's *oldest* queued run (so a device
starts runs in creation order), executes it, and, in the transaction that records the result,
claims the next one, until none is queued. A delivery that finds the device's slots all taken
leaves a "pending" mark for the slot holders and returns; a delivery whose run was already claimed
(a duplicate, or served by another delivery) claims nothing and leaves the device untouched.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import redis
from sqlalchemy import select, text

from core import db, log_context, runstate
from core.crypto import decrypt_json
from core.messages import Queued, enqueue
from core.models import CANCELED, FAILED, SUCCEEDED
from core.notify import channel, publish
from core.services import device_config
from drivers import AttachTicket, Driver, detaches, get_driver
from drivers.base import DETACHED, DEVICE_LOST, SPOOL_GONE, DriverError, ExecRequest, ExecResult
from providers import get_provider
from providers.base import RunSpec
from workers import context, metrics, presence
from workers.device_backoff import key as backoff_key
from workers.device_backoff import retryable
from workers.device_cache import CachedDevice
from workers.leases import BACKING_OFF, TAKEN_AFTER_BACKOFF, Slot, new_token, pending_key, run_lock_key, slots_key
from workers.supervisor import ActiveRun

log = logging.getLogger("agentruns.worker")
# A run re-attached after its deadline still gets this long to report a result its spool already holds.
REATTACH_GRACE = 5.0


class Outcome(NamedTuple):
    """What to record for a run, and what to do once it is recorded (forget its spool on the device)."""

    status: str
    fields: dict
    recorded: Callable[[], None] | None = None
    retry_in: float | None = None  # the device was away before the command started: back to the queue


# The pools this worker serves (`agentruns worker --pool`, which sets this); unset: every pool (a
# worker started with `celery ... worker -Q ...` consumes whatever queues it was given).
WORKER_POOLS = frozenset(p for p in os.environ.get("AGENTRUNS_WORKER_POOLS", "").split(",") if p)


def serves(pool: str) -> bool:
    return not WORKER_POOLS or pool in WORKER_POOLS


def execute(run_id: str, tenant_id: str | None = None, device_id: str | None = None) -> str:
    """Task body of runs.execute; returns what happened ("executed:N", "busy", "nothing-queued", "missing",
    "device-backoff")."""
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
    executed = 0
    while True:
        device = ctx.devices.get(tenant, device_id)
        if device is None:
            return "missing"
        if not serves(device.pool):
            # The device moved to another pool after this message was sent (the API re-routes its
            # queued runs too): pass the message on to the workers that can reach it.
            enqueue(ctx.celery(), [Queued(uuid.UUID(run_id), tenant, device_id, device.pool)])
            return "rerouted"
        served = _serve(ctx, device)
        if isinstance(served, int):  # BACKING_OFF
            return "device-backoff"  # the delivery that set the backoff sent a delayed retry
        if served is None:
            break  # all slots taken: the pending mark makes a holder look again before it leaves
        count, again = served
        executed += count
        # A run can commit after our last claim found nothing, while we still held the slot; its
        # delivery then found the device full and left the pending mark for us.
        if not again:
            break
    if executed:
        return f"executed:{executed}"
    if served is None:
        return "busy"
    log.info("delivery of run %s: nothing queued on its device (a duplicate delivery, or already served)", run_id)
    return "nothing-queued"


def _serve(ctx, device: CachedDevice) -> tuple[int, bool] | int | None:
    """Hold one of the device's slots and run its queued runs, oldest first, until none is left.

    Returns (how many ran, whether to look again: a delivery found the device full meanwhile, or
    serving stopped early), None when all of the device's slots were taken, or BACKING_OFF when the
    device waits for its retry (workers.device_backoff).
    """
    ttl_ms = ctx.settings.lease_seconds * 1000
    slot = Slot(slots_key(device.tenant_id, device.id), new_token(), pending_key(device.tenant_id, device.id))
    taken = ctx.leases.acquire_serving_slot(slot, device.max_concurrent_runs, ttl_ms,
                                            backoff_key(device.tenant_id, device.id))
    if taken == BACKING_OFF:
        return BACKING_OFF
    if not taken:
        return None
    if taken == TAKEN_AFTER_BACKOFF:
        ctx.backoff.suspect(device.tenant_id, device.id)
    executed, stopped_early = 0, False
    try:
        with db.transaction() as conn:
            run = _claim_next(ctx, conn, device)
        while run is not None:
            try:
                current = ctx.devices.current(device, run.device_version)
            except BaseException:
                _give_back(run)
                raise
            if current is None:  # deleted while its run was queued (the API refuses that; a race)
                record(ctx, run, None, None, Outcome(FAILED, dict(error={
                    "code": "device_not_found", "message": "the device was deleted before the run started"})))
                publish(ctx.redis, run.id, "finished")
                break
            if not serves(current.pool):  # moved to another pool meanwhile: its workers run it
                _give_back(run)
                enqueue(ctx.celery(), [Queued(run.id, current.tenant_id, current.id, current.pool)])
                break
            # Keep serving only while nothing says to stop: a changed device (its limit may be lower
            # now: the next slot is taken with the new one), a shutdown, or a slot lost in Redis.
            keep_serving = current is device and not ctx.supervisor.draining
            device = current
            ran, run, kept_serving = _run_one(ctx, run, device, slot, keep_serving)
            executed += ran
            stopped_early = not kept_serving
    finally:
        pending = quietly(ctx.leases.release_slot, slot)
    # After an early stop, runs may still be queued: take a slot again under the current limit.
    return executed, bool(pending) or (stopped_early and not ctx.supervisor.draining)


def _claim_next(ctx, conn, device: CachedDevice):
    cap = ctx.settings.tenant_max_in_flight
    if cap and not runstate.tenant_below_cap(conn, device.tenant_id, cap):
        # Fair sharing: the tenant has its share running. Its run stays queued, in order; the device
        # is remembered, and the tenant's next finished run sends a message for it (wake_throttled).
        quietly(ctx.redis.sadd, throttled_key(device.tenant_id), device.id)
        return None
    return runstate.claim_next(conn, device.tenant_id, device.id, ctx.worker_id, ctx.settings.lease_seconds)


def throttled_key(tenant_id: uuid.UUID) -> str:
    return f"agentruns:throttled:{tenant_id}"


_OLDEST_QUEUED = text("SELECT id FROM runs WHERE tenant_id = :tenant_id AND target_id = :device_id "
                      "AND status = 'queued' ORDER BY created_at, id LIMIT 1")


def wake_throttled(ctx, tenant_id: uuid.UUID) -> None:
    """A run of a capped tenant ended: send a message for a device whose run waited for the cap (the
    first remembered one that still has a run queued). Never raises: the run's result is recorded."""
    try:
        for _ in range(20):
            device_id = ctx.redis.spop(throttled_key(tenant_id))
            if not device_id:
                return
            device_id = device_id.decode() if isinstance(device_id, bytes) else device_id
            device = ctx.devices.get(tenant_id, device_id)
            with db.transaction() as conn:
                waiting = conn.execute(_OLDEST_QUEUED, dict(tenant_id=tenant_id, device_id=device_id)).scalar()
            if device is not None and waiting is not None:
                enqueue(ctx.celery(), [Queued(waiting, tenant_id, device_id, device.pool)])
                return
    except Exception as exc:  # noqa: BLE001 - the sweeper sends it later
        log.warning("tenant %s: could not wake a device waiting for the cap: %s", tenant_id, exc)


def _give_back(run) -> None:
    """A claimed run that never reached the device goes back to the queue (best effort: if this fails
    too, the reaper ends it as worker_lost once its lease lapses)."""
    try:
        with db.transaction() as conn:
            runstate.unclaim(conn, run.id, run.epoch)
    except Exception:
        log.exception("run %s: could not give the claimed run back to the queue", run.id)


def quietly(fn, *args, **kwargs):
    """Redis calls whose failure must not lose what PostgreSQL already committed (leases lapse anyway)."""
    try:
        return fn(*args, **kwargs)
    except redis.RedisError as exc:
        log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
        return None


def _run_one(ctx, run, device: CachedDevice, slot: Slot, keep_serving: bool) -> tuple[bool, object, bool]:
    # Every log line of the run's life in this thread names it (JSON logs: core.log_context).
    with log_context.bind(run_id=run.id, tenant_id=device.tenant_id, device_id=device.id, pool=device.pool):
        return _execute_one(ctx, run, device, slot, keep_serving)


def _execute_one(ctx, run, device: CachedDevice, slot: Slot, keep_serving: bool) -> tuple[bool, object, bool]:
    """Execute a claimed run under its Redis lock and record the result.

    Returns (whether it ran, the device's next run, whether serving went on): the next run is
    claimed in the same transaction that recorded this one, unless keep_serving is false, the slot
    was lost or a shutdown began (None also when nothing is queued).
    """
    lock_key, lock_token = run_lock_key(run.id), new_token()
    try:
        locked = ctx.leases.lock(lock_key, lock_token, ctx.settings.lease_seconds * 1000)
    except BaseException:
        _give_back(run)
        raise
    if not locked:
        # A worker of an earlier epoch still holds the run (its lease has not lapsed in Redis):
        # give the run back untouched and stop serving this device for now.
        _give_back(run)
        return False, None, True
    active = ActiveRun(run.id, run.epoch, lock_key, lock_token, slot.key, slot.token)
    ctx.supervisor.add(active)
    try:
        outcome = run_on_device(ctx, run, device, active)
        if outcome is not None and outcome.retry_in is not None:
            _give_back(run)
            quietly(ctx.backoff.retry_later, Queued(run.id, device.tenant_id, device.id, device.pool),
                    outcome.retry_in)
            return False, None, False
        quietly(ctx.backoff.reached, device.tenant_id, device.id)
        keep_serving = keep_serving and not active.slot_lost and not ctx.supervisor.draining
        if outcome is None:  # the lease was lost (another epoch owns the run) or it was handed over
            if not keep_serving:
                return True, None, False
            with db.transaction() as conn:
                return True, _claim_next(ctx, conn, device), True
        return True, record(ctx, run, active, device if keep_serving else None, outcome), keep_serving
    finally:
        ctx.supervisor.remove(active)
        # Releasing the lock also wakes the run's waiters (one round trip): the result is committed.
        quietly(ctx.leases.unlock, lock_key, lock_token, notify=channel(run.id))


def run_on_device(ctx, run, device: CachedDevice, active: ActiveRun,
                  ticket: AttachTicket | None = None) -> Outcome | None:
    """Run the provider's command on the device (or, with a ticket, re-attach to it); returns what to
    record, or None when there is nothing to record: the lease was lost, or the run was handed over."""
    settings, cfg = ctx.settings, device.config
    if cfg.spec.driver == "local" and not settings.allow_local_devices:
        # A device made while the API allowed it, or by an API configured differently from us.
        return Outcome(FAILED, dict(error={"code": "local_driver_disabled", "message": device_config.LOCAL_DISABLED}))
    provider = get_provider(run.provider)
    driver = get_driver(cfg.spec, on_host_key=device_config.pin_host_key(device.tenant_id, device.id),
                        device_lost_seconds=settings.device_lost_seconds)
    active.detachable = detaches(driver)
    key = str(run.id)
    try:
        result = _drive(ctx, run, device, active, driver, provider, ticket)
    except DriverError as exc:
        active.finishing = True
        if active.stop_reason == "lease_lost":
            return None
        if ticket is None and active.pgid is None and retryable(exc):
            wait = quietly(ctx.backoff.failed, device.tenant_id, device.id)
            if wait is not None:
                log.info("run %s: device %s unreachable (%s); back to the queue, retried in %.0f s",
                         run.id, device.id, exc.code, wait)
                return Outcome(FAILED, {}, retry_in=wait)
        # The spool goes once the failure is recorded (not one a refused second start found: that is
        # an earlier start's); a run given up while its device was unreachable may still run there,
        # so it is stopped first, once the device is back.
        stop = exc.pgid if exc.code == DEVICE_LOST else None
        forget = _forgetter(driver, key, stop) if exc.before_start or exc.pgid else None
        if exc.pgid and forget is None:  # a driver without spools: the command may still be running
            _kill_quietly(driver, exc.pgid, run.id)
        return Outcome(FAILED, dict(error={"code": exc.code, "message": exc.message}, pgid=active.pgid,
                                       started_at=active.started_at), forget)
    active.finishing = True
    if active.stop_reason == "lease_lost":
        return None
    if result.killed == DETACHED:  # a warm shutdown ran out of time: hand the run over, unharmed
        with db.transaction() as conn:
            runstate.take_over(conn, run.id, run.epoch, 0, "its worker shut down")
        log.info("run %s handed over for re-attaching (worker shutdown)", run.id)
        return None
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    parsed = provider.parse(result.exit_code, stdout, stderr)
    status, error = _outcome(result.killed, active.stop_reason, parsed, run.timeout)
    return Outcome(status, dict(output=parsed.output, stdout=stdout, stderr=stderr, exit_code=result.exit_code,
                                stdout_truncated=result.stdout_truncated, stderr_truncated=result.stderr_truncated,
                                usage=parsed.usage, cost_usd=parsed.cost_usd, session_id=parsed.session_id,
                                pgid=result.pgid, started_at=result.started_at,
                                finished_at=result.finished_at or runstate.utcnow(), error=error),
                   # A stopped run whose stop could not reach its device is stopped with the spool.
                   _forgetter(driver, key, result.pgid if result.killed else None))


def _drive(ctx, run, device: CachedDevice, active: ActiveRun, driver: Driver, provider,
           ticket: AttachTicket | None) -> ExecResult:
    """Start the run's command through the driver, or re-attach to it, and follow it to its end."""
    settings, cfg = ctx.settings, device.config
    on_output = partial(ctx.supervisor.output, active)
    if ticket is not None:
        if not detaches(driver):  # the device was switched to another driver since the run started
            raise DriverError(SPOOL_GONE, "the device's driver changed: the run's spool cannot be reached",
                              before_start=False)
        elapsed = (runstate.utcnow() - ticket.started_at).total_seconds() if ticket.started_at else 0.0
        request = ExecRequest(argv=["(re-attach)"], cwd=run.cwd, timeout=max(run.timeout - elapsed, REATTACH_GRACE),
                              kill_grace=settings.kill_grace_seconds, output_cap=settings.output_cap_bytes,
                              spool_key=str(run.id))
        return driver.attach(request, ticket, on_output=on_output, cancel=active.stop, detach=active.detach)
    invocation = provider.build(RunSpec(
        run_id=str(run.id), prompt=run.prompt, model=run.model, command=run.command,
        device_username=cfg.username, settings=cfg.provider_settings(run.provider)))
    # Layering: device env, then the provider's (with its per-device settings), then the run's own.
    env = {**cfg.env, **invocation.env, **decrypt_json(settings.secret_key, run.env_enc)}
    request = ExecRequest(argv=invocation.argv, cwd=run.cwd, env=env, stdin=invocation.stdin,
                          timeout=float(run.timeout), kill_grace=settings.kill_grace_seconds,
                          output_cap=settings.output_cap_bytes, spool_key=str(run.id),
                          stdin_file_env=invocation.stdin_file_env)

    def on_start(pgid: int) -> None:
        ctx.supervisor.started(active, pgid)
        presence.device_connected(ctx.redis, device.tenant_id, device.id)  # its last successful connect (stats)

    if detaches(driver):
        return driver.run(request, on_output=on_output, on_start=on_start, cancel=active.stop, detach=active.detach)
    return driver.run(request, on_output=on_output, on_start=on_start, cancel=active.stop)


def _forgetter(driver: Driver, key: str, stop_pgid: int | None = None) -> Callable[[], None] | None:
    """What removes the run's spool once its result is recorded (None: the driver keeps none)."""
    if not detaches(driver):
        return None
    return lambda: driver.discard(key, stop_pgid)


def _kill_quietly(driver, pgid: int, run_id) -> None:
    try:
        driver.kill_group(pgid)
    except Exception as exc:  # the device may be unreachable now; the record says why the run failed
        log.warning("run %s: could not kill process group %s: %s", run_id, pgid, exc)


def _outcome(killed: str | None, stop_reason: str | None, parsed, timeout: int) -> tuple[str, dict | None]:
    """Map how the process ended and what the provider parsed to a status and an error."""
    if stop_reason == "worker_shutdown":  # interrupted: canceled, with the cause in the code
        return CANCELED, {"code": "worker_shutdown", "message": "the worker shut down before the run finished"}
    if killed == "canceled" or stop_reason == "canceled":
        return CANCELED, {"code": "canceled", "message": "canceled by request"}
    if killed == "timeout":
        return FAILED, {"code": "timeout", "message": f"timed out after {timeout} s; the process tree was killed"}
    if parsed.succeeded:
        return SUCCEEDED, None
    return FAILED, {"code": parsed.error_code or "nonzero_exit",
                    "message": parsed.error_message or "the command failed"}


def record(ctx, run, active: ActiveRun | None, next_of: CachedDevice | None, outcome: Outcome):
    """Record the outcome, fenced by the epoch we hold; with next_of, claim that device's next run in
    the same transaction and return it.

    The run's last output events go into the same transaction, before its terminal status event,
    and only while the run is still ours (the reaper may have ended it).
    """
    fields = outcome.fields
    attempts = []

    def write(conn):
        attempts.append(1)
        if ctx.settings.tenant_max_in_flight:
            # After a claim that found the tenant at its cap and remembered its device (that claim
            # holds this lock until it commits), so the wake-up below finds the device.
            runstate.lock_tenant_claims(conn, run.tenant_id)
        ours = not events or runstate.hold(conn, run.id, run.epoch)
        if ours and events:
            runstate.append_events(conn, events)
        row = runstate.finish(conn, run.id, run.epoch, outcome.status, **fields) if ours else None
        # Claim the next run on the first try only: a try that failed in its COMMIT may have claimed one.
        claim = next_of is not None and len(attempts) == 1
        return row, _claim_next(ctx, conn, next_of) if claim else None

    with ctx.supervisor.final_events(active) as events:
        # A database restart must not cost a finished run its result: written again while the lease
        # holds (fenced by epoch and, with events, by hold(): a second write of a committed result does nothing).
        row, following = db.retrying(write, seconds=ctx.settings.lease_seconds, what=f"run {run.id} result")
    if row is None:
        log.warning("run %s epoch %s: result not recorded, the run moved on without us", run.id, run.epoch)
    else:
        log.info("run %s %s", run.id, outcome.status)
        metrics.finished(outcome.status, fields.get("error"), row.started_at, row.finished_at)
        if ctx.settings.tenant_max_in_flight and following is None:
            wake_throttled(ctx, row.tenant_id)
        if outcome.recorded is not None:
            try:
                outcome.recorded()
            except Exception:  # the spool is swept later; the result is what matters
                log.exception("run %s: could not hand its spool over for removal", run.id)
    return following
