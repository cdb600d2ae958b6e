"""The one writer of run status.

Every transition is a guarded UPDATE: `WHERE id = :id AND status IN (:allowed) [AND epoch = :epoch]`.
Zero rows back means another actor owns the run (or it already moved on): the caller does nothing.
Each transition also appends a `status` event in the same transaction, so the event log and the row
never disagree.

    (new)   -> queued    create_queued()  (API)
    queued  -> running   claim_next()     (worker; bumps epoch, sets the lease)
    running -> queued    unclaim()        (worker; only before the command started)
    queued  -> canceled  cancel()         (API; the run never executes)
    running -> succeeded | failed | canceled   finish()   (worker holding the epoch)
    running -> failed    reap_expired()   (beat; lease expired -> worker_lost)
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, bindparam, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.models import CANCELED, FAILED, QUEUED, RUNNING, TERMINAL, Device, Run, RunEvent

runs, run_events, devices = Run.__table__, RunEvent.__table__, Device.__table__

# The worker's hot path (claim, start, finish: once per run each) is written once as SQL instead of
# being built as SQLAlchemy expressions on every call: building and cache-keying the expressions cost
# the worker more CPU than the database spent running them. Each transition and its status event
# are one statement (a data-modifying CTE), so one round trip.
_CREATE_QUEUED = text("""
WITH created AS (
    INSERT INTO runs (id, tenant_id, target_kind, target_id, provider, prompt, model, command, cwd, timeout,
                      metadata, env_enc, request_id, status, epoch, stdout_truncated, stderr_truncated)
    VALUES (:id, :tenant_id, :target_kind, :target_id, :provider, :prompt, :model, :command, :cwd, :timeout,
            :metadata, :env_enc, :request_id, 'queued', 0, false, false)
    RETURNING id, created_at, updated_at),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM created)
SELECT created_at, updated_at FROM created""").bindparams(bindparam("metadata", type_=JSONB))
_CLAIM_NEXT = text("""
WITH claimed AS (
    UPDATE runs SET status = 'running', epoch = epoch + 1, worker_id = :worker_id,
           lease_until = now() + make_interval(secs => :lease_seconds), updated_at = now()
    WHERE id = (SELECT id FROM runs
                WHERE tenant_id = :tenant_id AND target_id = :device_id AND status = 'queued'
                ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
      AND status = 'queued'
    RETURNING id, epoch, provider, prompt, model, command, cwd, timeout, env_enc),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM claimed)
SELECT claimed.*,
       (SELECT updated_at FROM devices WHERE tenant_id = :tenant_id AND id = :device_id) AS device_version
FROM claimed""")
_MARK_STARTED = text("""
UPDATE runs SET pgid = :pgid, started_at = :started_at, updated_at = now()
WHERE id = :run_id AND status = 'running' AND epoch = :epoch""")
# pgid and started_at may already be recorded (mark_started); a result without them keeps those.
_FINISH = text("""
WITH done AS (
    UPDATE runs SET status = :status, lease_until = NULL, output = :output, stdout = :stdout,
           stderr = :stderr, exit_code = :exit_code, stdout_truncated = :stdout_truncated,
           stderr_truncated = :stderr_truncated, usage = :usage, cost_usd = :cost_usd,
           session_id = :session_id, error = :error, pgid = coalesce(:pgid, pgid),
           started_at = coalesce(:started_at, started_at), finished_at = :finished_at, updated_at = now()
    WHERE id = :run_id AND status = 'running' AND epoch = :epoch
    RETURNING id, tenant_id, target_id, pgid, started_at, finished_at),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM done)
SELECT * FROM done""").bindparams(bindparam("usage", type_=JSONB(none_as_null=True)),
                                   bindparam("error", type_=JSONB(none_as_null=True)))
_HOLD = text("SELECT 1 FROM runs WHERE id = :run_id AND status = 'running' AND epoch = :epoch FOR UPDATE")
_RESULT_FIELDS = dict(output=None, stdout=None, stderr=None, exit_code=None, stdout_truncated=False,
                      stderr_truncated=False, usage=None, cost_usd=None, session_id=None, error=None,
                      pgid=None, started_at=None)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _event_data(status: str, error: dict | None = None) -> str:
    payload = {"status": status}
    if error:
        payload["error"] = error
    return json.dumps(payload)


def _status_event(s: Session | Connection, run_id, status: str, error: dict | None = None) -> None:
    s.execute(insert(run_events).values(run_id=run_id, type="status", data=_event_data(status, error)))


def _transition(s: Session, run_id, allowed: tuple[str, ...], values: dict, epoch: int | None = None):
    cond = [Run.id == run_id, Run.status.in_(allowed)]
    if epoch is not None:
        cond.append(Run.epoch == epoch)
    row = s.execute(update(Run).where(and_(*cond)).values(**values).returning(Run)).scalar_one_or_none()
    if row is not None and "status" in values:
        _status_event(s, row.id, values["status"], values.get("error"))
    return row


def create_queued(s: Session | Connection, values: dict):
    """Insert a queued run and its `queued` status event in one statement; returns (created_at, updated_at).

    values: id, tenant_id, target_kind, target_id, provider, prompt, model, command, cwd, timeout,
    metadata, env_enc, request_id.
    """
    return s.execute(_CREATE_QUEUED, {**values, "event": _event_data(QUEUED)}).one()


def claim_next(s: Session | Connection, tenant_id: uuid.UUID, device_id: str, worker_id: str,
               lease_seconds: int):
    """Claim the oldest queued run of a device, so a device starts its runs in creation order.

    Returns a row (id, epoch, provider, prompt, model, command, cwd, timeout, env_enc,
    device_version), or None when nothing is queued. device_version is the device's updated_at, so a
    worker can tell that its cached device settings are stale.
    """
    return s.execute(_CLAIM_NEXT, dict(tenant_id=tenant_id, device_id=device_id, worker_id=worker_id,
                                       lease_seconds=lease_seconds, event=_event_data(RUNNING))).first()


def unclaim(s: Session | Connection, run_id: uuid.UUID, epoch: int) -> bool:
    """running -> queued before anything touched the device (device busy or unreachable, retry later)."""
    row = s.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RUNNING, runs.c.epoch == epoch,
                                       runs.c.started_at.is_(None))
                    .values(status=QUEUED, lease_until=None, worker_id=None).returning(runs.c.id)).first()
    if row is not None:
        _status_event(s, run_id, QUEUED)
    return row is not None


def mark_started(s: Session | Connection, started: list[tuple[uuid.UUID, int, int, datetime]]) -> None:
    """Record that commands are running on their devices: (run_id, epoch, pgid, started_at) each,
    the process group being what the reaper kills if the worker is lost."""
    s.execute(_MARK_STARTED, [dict(run_id=run_id, epoch=epoch, pgid=pgid, started_at=started_at)
                              for run_id, epoch, pgid, started_at in started])


def renew_leases(s: Session | Connection, held: list[tuple[uuid.UUID, int]], lease_seconds: int) -> dict[uuid.UUID, bool]:
    """Extend the DB lease of every (run, epoch) we still hold, in one statement.

    Returns {run_id: cancel_requested} for the runs still held; a run missing from it lost its lease.
    """
    if not held:
        return {}
    rows = s.execute(update(runs).where(tuple_(runs.c.id, runs.c.epoch).in_(held), runs.c.status == RUNNING)
                     .values(lease_until=func.now() + timedelta(seconds=lease_seconds))
                     .returning(runs.c.id, runs.c.cancel_requested_at)).all()
    return {run_id: requested is not None for run_id, requested in rows}


def finish(s: Session | Connection, run_id: uuid.UUID, epoch: int, status: str, **fields):
    """running -> succeeded | failed | canceled, fenced by epoch. fields: any of _RESULT_FIELDS and
    finished_at (default now); the result fields not given are stored empty.

    Returns a row (id, tenant_id, target_id, pgid, started_at, finished_at), or None when the run
    moved on without us.
    """
    assert status in TERMINAL
    unknown = set(fields) - set(_RESULT_FIELDS) - {"finished_at"}
    assert not unknown, f"not a result field: {unknown}"
    params = {**_RESULT_FIELDS, "finished_at": utcnow(), **fields}
    return s.execute(_FINISH, dict(params, run_id=run_id, epoch=epoch, status=status,
                                   event=_event_data(status, params["error"]))).first()


def hold(s: Session | Connection, run_id: uuid.UUID, epoch: int) -> bool:
    """Lock the run's row for the rest of the transaction if it is still running under `epoch`."""
    return s.execute(_HOLD, dict(run_id=run_id, epoch=epoch)).first() is not None


class CancelConflict(Exception):
    """The run already finished."""


def cancel(s: Session, run_id: uuid.UUID) -> Run:
    """Cancel: a queued run ends now; a running run gets cancel_requested_at for its worker to act on."""
    now = utcnow()
    err = {"code": "canceled", "message": "canceled by request"}
    row = _transition(s, run_id, (QUEUED,), {"status": CANCELED, "finished_at": now,
                                            "cancel_requested_at": now, "error": err})
    if row is not None:
        return row
    row = s.execute(update(Run).where(Run.id == run_id, Run.status == RUNNING)
                    .values(cancel_requested_at=func.coalesce(Run.cancel_requested_at, now))
                    .returning(Run)).scalar_one_or_none()
    if row is not None:
        return row
    run = s.get(Run, run_id)
    if run is not None and run.status == CANCELED:
        return run  # repeating a cancel changes nothing
    raise CancelConflict(run.status if run else "missing")


WORKER_LOST = {"code": "worker_lost", "message": "the worker running this run stopped renewing its lease"}


def reap_expired(s: Session, limit: int = 100) -> list[Run]:
    """running runs whose lease expired -> failed/worker_lost. Never re-executed: agents change files."""
    ids = s.execute(select(Run.id, Run.epoch).where(Run.status == RUNNING, Run.lease_until < func.now())
                    .order_by(Run.lease_until).limit(limit).with_for_update(skip_locked=True)).all()
    err = WORKER_LOST
    reaped = []
    for run_id, epoch in ids:
        row = finish(s, run_id, epoch, FAILED, error=err)
        if row is not None:
            reaped.append(row)
    return reaped


def stale_queued(s: Session, older_than_seconds: int, limit: int = 500) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """(id, tenant_id, target_id) of queued runs nobody enqueued or claimed for a while (Redis was
    down, or a message was lost)."""
    cutoff = func.now() - timedelta(seconds=older_than_seconds)
    rows = s.execute(select(Run.id, Run.tenant_id, Run.target_id)
                     .where(Run.status == QUEUED, func.coalesce(Run.enqueued_at, Run.created_at) < cutoff)
                     .order_by(Run.created_at).limit(limit)).all()
    return [tuple(row) for row in rows]


def mark_enqueued(s: Session, run_ids: list[uuid.UUID]) -> None:
    if run_ids:
        s.execute(update(Run).where(Run.id.in_(run_ids), Run.status == QUEUED).values(enqueued_at=func.now()))
