"""The one writer of run status.

Every transition is a guarded UPDATE: `WHERE id = :id AND status IN (:allowed) [AND epoch = :epoch]`.
Zero rows back means another actor owns the run (or it already moved on): the caller does nothing.
Each transition also appends a `status` event in the same transaction, so the event log and the row
never disagree.

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

from sqlalchemy import and_, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.models import CANCELED, FAILED, QUEUED, RUNNING, TERMINAL, Device, Run, RunEvent

# The worker's hot path (claim, start, finish) uses Core statements on the tables: they return plain
# rows and skip the ORM's unit of work, which was most of a worker's CPU per run.
runs, run_events, devices = Run.__table__, RunEvent.__table__, Device.__table__
# What a worker needs to execute a claimed run.
CLAIMED_COLUMNS = (runs.c.id, runs.c.epoch, runs.c.provider, runs.c.prompt, runs.c.model, runs.c.command,
                   runs.c.cwd, runs.c.timeout, runs.c.env_enc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _status_event(s: Session | Connection, run_id, status: str, error: dict | None = None) -> None:
    payload = {"status": status}
    if error:
        payload["error"] = error
    s.execute(insert(run_events).values(run_id=run_id, type="status", data=json.dumps(payload)))


def _transition(s: Session, run_id, allowed: tuple[str, ...], values: dict, epoch: int | None = None):
    cond = [Run.id == run_id, Run.status.in_(allowed)]
    if epoch is not None:
        cond.append(Run.epoch == epoch)
    row = s.execute(update(Run).where(and_(*cond)).values(**values).returning(Run)).scalar_one_or_none()
    if row is not None and "status" in values:
        _status_event(s, row.id, values["status"], values.get("error"))
    return row


def record_created(s: Session, run: Run) -> None:
    """Log the initial `queued` event for a freshly inserted run."""
    _status_event(s, run.id, QUEUED)


def claim_next(s: Session | Connection, tenant_id: uuid.UUID, device_id: str, worker_id: str,
               lease_seconds: int):
    """Claim the oldest queued run of a device, so a device starts its runs in creation order.

    Returns a row of CLAIMED_COLUMNS plus `device_version` (the device's updated_at, so a worker
    can tell that its cached device settings are stale), or None when nothing is queued.
    """
    oldest = (select(runs.c.id).where(runs.c.tenant_id == tenant_id, runs.c.target_id == device_id,
                                      runs.c.status == QUEUED)
              .order_by(runs.c.created_at, runs.c.id).limit(1).with_for_update(skip_locked=True).scalar_subquery())
    version = (select(devices.c.updated_at).where(devices.c.tenant_id == tenant_id, devices.c.id == device_id)
               .scalar_subquery())
    row = s.execute(update(runs).where(runs.c.id == oldest, runs.c.status == QUEUED).values(
        status=RUNNING, epoch=runs.c.epoch + 1, worker_id=worker_id,
        lease_until=func.now() + timedelta(seconds=lease_seconds),
    ).returning(*CLAIMED_COLUMNS, version.label("device_version"))).first()
    if row is not None:
        _status_event(s, row.id, RUNNING)
    return row


def unclaim(s: Session | Connection, run_id: uuid.UUID, epoch: int) -> bool:
    """running -> queued before anything touched the device (device busy or unreachable, retry later)."""
    row = s.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RUNNING, runs.c.epoch == epoch,
                                       runs.c.started_at.is_(None))
                    .values(status=QUEUED, lease_until=None, worker_id=None).returning(runs.c.id)).first()
    if row is not None:
        _status_event(s, run_id, QUEUED)
    return row is not None


def mark_started(s: Session | Connection, run_id: uuid.UUID, epoch: int, pgid: int | None,
                 started_at: datetime) -> bool:
    """Record that the command is running on the device (its process group, for kill and reap)."""
    row = s.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RUNNING, runs.c.epoch == epoch)
                    .values(pgid=pgid, started_at=started_at).returning(runs.c.id)).first()
    return row is not None


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
    """running -> succeeded | failed | canceled, fenced by epoch.

    Returns a row (id, tenant_id, target_id, pgid), or None when the run moved on without us.
    """
    assert status in TERMINAL
    fields.setdefault("finished_at", utcnow())
    row = s.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RUNNING, runs.c.epoch == epoch)
                    .values(status=status, lease_until=None, **fields)
                    .returning(runs.c.id, runs.c.tenant_id, runs.c.target_id, runs.c.pgid)).first()
    if row is not None:
        _status_event(s, run_id, status, fields.get("error"))
    return row


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


def reap_expired(s: Session, limit: int = 100) -> list[Run]:
    """running runs whose lease expired -> failed/worker_lost. Never re-executed: agents change files."""
    ids = s.execute(select(Run.id, Run.epoch).where(Run.status == RUNNING, Run.lease_until < func.now())
                    .order_by(Run.lease_until).limit(limit).with_for_update(skip_locked=True)).all()
    err = {"code": "worker_lost", "message": "the worker running this run stopped renewing its lease"}
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
