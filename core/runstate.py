"""The one writer of run status.

Every transition is a guarded UPDATE: `WHERE id = :id AND status IN (:allowed) [AND epoch = :epoch]`.
Zero rows back means another actor owns the run (or it already moved on): the caller does nothing.
Each transition also appends a `status` event in the same transaction, so the event log and the row
never disagree.

    (new)   -> queued    create_queued(), create_queued_on_device()  (API)
    queued  -> running   claim_next()     (worker; bumps epoch, sets the lease)
    running -> queued    unclaim()        (worker; only before the command started)
    queued  -> canceled  cancel()         (API; the run never executes)
    running -> succeeded | failed | canceled   finish()   (worker holding the epoch)
    running -> running   take_over()      (beat, or the worker itself when it shuts down: the run is
                                           up for re-attaching; bumps epoch, clears worker_id)
    running -> running   claim_attach()   (worker; takes a run up for re-attaching: bumps epoch)
    running -> canceled  reap_expired()   (beat; lease expired and nothing to re-attach -> worker_lost)

Webhook events are written by a trigger on `runs` in the same transactions (migration 0006): every
transition here that a receiver can subscribe to reaches the outbox without code of its own.

A run's command never starts twice: a take-over only ever re-attaches to the command still running
(or finished) on the device, and every write after it is fenced by the new epoch.
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from core.models import CANCELED, QUEUED, RUNNING, TERMINAL, Device, Run, RunEvent

runs, run_events, devices = Run.__table__, RunEvent.__table__, Device.__table__

# Every statement that writes run status is SQL written once, here, and named: building and
# cache-keying SQLAlchemy expressions on every call cost the worker's hot path (claim, start, finish:
# once per run each) more CPU than the database spent running them; the rest follow for one style.
# Each transition and its status event are one statement (a data-modifying CTE), so one round trip.
_CREATE_QUEUED = text("""
WITH created AS (
    INSERT INTO runs (id, tenant_id, target_kind, target_id, provider, prompt, model, command, cwd, timeout,
                      metadata, env_enc, request_id, webhook_url, status, epoch, stdout_truncated,
                      stderr_truncated)
    VALUES (:id, :tenant_id, :target_kind, :target_id, :provider, :prompt, :model, :command, :cwd, :timeout,
            :metadata, :env_enc, :request_id, :webhook_url, 'queued', 0, false, false)
    RETURNING id, created_at, updated_at),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM created)
SELECT created_at, updated_at FROM created""").bindparams(bindparam("metadata", type_=JSONB))
# The same insert with the device read (and key-share locked, as core.services.runs.create does) by
# the statement itself: in autocommit, a create that needs no transaction is one round trip instead
# of BEGIN, the device's SELECT, the INSERT and COMMIT. No row back: no such device (of that kind).
CREATE_QUEUED_ON_DEVICE = text("""
WITH device AS (
    SELECT id, kind, pool, coalesce(CAST(:cwd AS text), nullif(default_cwd, ''), CAST(:default_cwd AS text)) AS cwd
    FROM devices
    WHERE tenant_id = :tenant_id AND id = :target_id AND (CAST(:target_kind AS text) IS NULL OR kind = :target_kind)
    FOR KEY SHARE),
created AS (
    INSERT INTO runs (id, tenant_id, target_kind, target_id, provider, prompt, model, command, cwd, timeout,
                      metadata, env_enc, request_id, webhook_url, status, epoch, stdout_truncated,
                      stderr_truncated)
    SELECT :id, :tenant_id, device.kind, device.id, :provider, :prompt, :model, :command, device.cwd, :timeout,
           :metadata, :env_enc, :request_id, :webhook_url, 'queued', 0, false, false
    FROM device
    RETURNING id, target_kind, target_id, cwd, created_at, updated_at),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM created)
SELECT created.target_kind, created.target_id, created.cwd, created.created_at, created.updated_at, device.pool
FROM created, device""").bindparams(bindparam("metadata", type_=JSONB))
_CLAIM_NEXT = text("""
WITH claimed AS (
    UPDATE runs SET status = 'running', epoch = epoch + 1, worker_id = :worker_id,
           lease_until = now() + make_interval(secs => :lease_seconds), updated_at = now()
    WHERE id = (SELECT id FROM runs
                WHERE tenant_id = :tenant_id AND target_id = :device_id AND status = 'queued'
                ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
      AND status = 'queued'
    RETURNING id, epoch, tenant_id, provider, prompt, model, command, cwd, timeout, env_enc),
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
# Before the command started only: a run that touched its device is never queued again.
_UNCLAIM = text("""
WITH back AS (
    UPDATE runs SET status = 'queued', lease_until = NULL, worker_id = NULL, updated_at = now()
    WHERE id = :run_id AND status = 'running' AND epoch = :epoch AND started_at IS NULL
    RETURNING id),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM back)
SELECT id FROM back""")
_RENEW_LEASES = text("""
UPDATE runs SET lease_until = now() + make_interval(secs => :lease_seconds)
WHERE (id, epoch) IN (SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:epochs AS integer[])))
  AND status = 'running'
RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested""")
_CANCEL_QUEUED = text("""
WITH done AS (
    UPDATE runs SET status = 'canceled', finished_at = now(), cancel_requested_at = now(), error = :error,
           updated_at = now()
    WHERE id = :run_id AND status = 'queued'
    RETURNING *),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'status', :event FROM done)
SELECT * FROM done""").bindparams(bindparam("error", type_=JSONB))
_REQUEST_CANCEL = text("""
UPDATE runs SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
WHERE id = :run_id AND status = 'running'
RETURNING *""")
_CURRENT = text("SELECT * FROM runs WHERE id = :run_id")
# A run can be re-attached when its process group was recorded on a device whose driver keeps
# commands detached (ssh), and not so long after its start that even the remote backstop and the
# device-lost limit are over (a run whose attaches keep dying must end some time).
_EXPIRED = text("""
SELECT r.id, r.epoch,
       (r.pgid IS NOT NULL AND d.driver = 'ssh'
        AND r.started_at + make_interval(secs => r.timeout + :slack_seconds) > now()) AS attachable
FROM runs r LEFT JOIN devices d ON d.tenant_id = r.tenant_id AND d.id = r.target_id
WHERE r.status = 'running' AND r.lease_until < now()
ORDER BY r.lease_until LIMIT :limit FOR UPDATE OF r SKIP LOCKED""")
# The note only when a worker had the run: a run taken over again because its re-attach did not
# come (the message was lost, or every worker was busy) says nothing new.
_TAKE_OVER = text("""
WITH before AS (
    SELECT worker_id FROM runs WHERE id = :run_id),
taken AS (
    UPDATE runs SET epoch = epoch + 1, worker_id = NULL,
           lease_until = now() + make_interval(secs => :lease_seconds), updated_at = now()
    WHERE id = :run_id AND status = 'running' AND epoch = :epoch
    RETURNING id, epoch, tenant_id, target_id),
logged AS (
    INSERT INTO run_events (run_id, type, data)
    SELECT id, 'note', :note FROM taken, before WHERE before.worker_id IS NOT NULL)
SELECT taken.*, coalesce((SELECT pool FROM devices d WHERE d.tenant_id = taken.tenant_id AND d.id = taken.target_id),
                         'default') AS pool
FROM taken""")
_CLAIM_ATTACH = text("""
WITH claimed AS (
    UPDATE runs SET epoch = epoch + 1, worker_id = :worker_id,
           lease_until = now() + make_interval(secs => :lease_seconds), updated_at = now()
    WHERE id = :run_id AND status = 'running' AND worker_id IS NULL AND pgid IS NOT NULL
    RETURNING id, epoch, tenant_id, target_id, provider, prompt, model, command, cwd, timeout, env_enc,
              pgid, started_at, stdout_offset, stderr_offset, cancel_requested_at IS NOT NULL AS cancel_requested),
logged AS (
    INSERT INTO run_events (run_id, type, data) SELECT id, 'note', :note FROM claimed)
SELECT claimed.*,
       (SELECT count(*) FROM run_events e WHERE e.run_id = claimed.id AND e.type IN ('stdout', 'stderr'))
           AS output_events,
       (SELECT updated_at FROM devices d WHERE d.tenant_id = claimed.tenant_id AND d.id = claimed.target_id)
           AS device_version
FROM claimed""")
_RECORD_OFFSETS = text("""
UPDATE runs SET stdout_offset = v.stdout_offset, stderr_offset = v.stderr_offset
FROM unnest(CAST(:ids AS uuid[]), CAST(:epochs AS integer[]), CAST(:outs AS bigint[]), CAST(:errs AS bigint[]))
     AS v(id, epoch, stdout_offset, stderr_offset)
WHERE runs.id = v.id AND runs.epoch = v.epoch AND runs.status = 'running'
RETURNING runs.id""")
# The tenant's claims wait for each other (until the claiming transaction commits), so that two
# workers cannot both see one slot under the cap and both take it. Two statements: a statement's
# snapshot is taken when it starts, so a count in the locking statement would not see the claim
# committed while it waited for the lock.
_TENANT_CLAIM_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('agentruns.tenant:' || "
                          "CAST(:tenant_id AS text), 0))")
_TENANT_BELOW_CAP = text("""
SELECT (SELECT count(*) FROM (SELECT 1 FROM runs WHERE tenant_id = :tenant_id AND status = 'running'
                              LIMIT :cap) running) < :cap""")
# One message per device (a delivery serves the device's queued runs oldest first), the devices
# sent longest ago first: a tenant whose runs wait on purpose (fair sharing) cannot fill every sweep.
_STALE_QUEUED = text("""
SELECT id, tenant_id, target_id, pool FROM (
    SELECT DISTINCT ON (r.tenant_id, r.target_id) r.id, r.tenant_id, r.target_id,
           coalesce(d.pool, 'default') AS pool, coalesce(r.enqueued_at, r.created_at) AS sent
    FROM runs r LEFT JOIN devices d ON d.tenant_id = r.tenant_id AND d.id = r.target_id
    WHERE r.status = 'queued' AND coalesce(r.enqueued_at, r.created_at) < now() - make_interval(secs => :seconds)
    ORDER BY r.tenant_id, r.target_id, r.created_at) oldest_per_device
ORDER BY sent LIMIT :limit""")
# Every queued run of the devices sent: the message covers them all.
_MARK_ENQUEUED = text("""
UPDATE runs SET enqueued_at = now()
WHERE status = 'queued' AND (tenant_id, target_id) IN (
    SELECT tenant_id, target_id FROM runs WHERE id = ANY(CAST(:ids AS uuid[])))""")
_RESULT_FIELDS = dict(output=None, stdout=None, stderr=None, exit_code=None, stdout_truncated=False,
                      stderr_truncated=False, usage=None, cost_usd=None, session_id=None, error=None,
                      pgid=None, started_at=None)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _event_data(status: str, error: dict | None = None) -> str:
    payload: dict[str, object] = {"status": status}
    if error:
        payload["error"] = error
    return json.dumps(payload)


def _run(row) -> Run:
    """A transient Run from a `SELECT *`/`RETURNING *` row (the column `metadata` is the attribute metadata_)."""
    values = dict(row._mapping)
    values["metadata_"] = values.pop("metadata")
    return Run(**values)


def create_queued(s: Connection, values: dict):
    """Insert a queued run and its `queued` status event in one statement; returns (created_at, updated_at).

    values: id, tenant_id, target_kind, target_id, provider, prompt, model, command, cwd, timeout,
    metadata, env_enc, request_id, webhook_url.
    """
    return s.execute(_CREATE_QUEUED, {**values, "event": _event_data(QUEUED)}).one()


def create_queued_on_device(s: Connection, values: dict, default_cwd: str):
    """create_queued() with the device looked up by the INSERT itself; returns (target_kind, target_id,
    cwd, created_at, updated_at, pool), or None when the tenant has no such device of that kind.

    values: as create_queued's, but target_kind may be None (any kind) and cwd None (the device's
    default_cwd, else default_cwd).
    """
    return s.execute(CREATE_QUEUED_ON_DEVICE, {**values, "default_cwd": default_cwd,
                                                 "event": _event_data(QUEUED)}).first()


def claim_next(s: Connection, tenant_id: uuid.UUID, device_id: str, worker_id: str,
               lease_seconds: int):
    """Claim the oldest queued run of a device, so a device starts its runs in creation order.

    Returns a row (id, epoch, tenant_id, provider, prompt, model, command, cwd, timeout, env_enc,
    device_version), or None when nothing is queued. device_version is the device's updated_at, so a
    worker can tell that its cached device settings are stale.
    """
    return s.execute(_CLAIM_NEXT, dict(tenant_id=tenant_id, device_id=device_id, worker_id=worker_id,
                                       lease_seconds=lease_seconds, event=_event_data(RUNNING))).first()


def lock_tenant_claims(conn: Connection, tenant_id: uuid.UUID) -> None:
    """Hold the tenant's claim lock until the transaction ends (see tenant_below_cap)."""
    conn.execute(_TENANT_CLAIM_LOCK, dict(tenant_id=tenant_id))


def tenant_below_cap(conn: Connection, tenant_id: uuid.UUID, cap: int) -> bool:
    """Whether the tenant has fewer than `cap` runs running; holds the tenant's claim lock until the
    transaction ends (a claim that follows in it cannot overshoot the cap)."""
    lock_tenant_claims(conn, tenant_id)
    return bool(conn.execute(_TENANT_BELOW_CAP, dict(tenant_id=tenant_id, cap=cap)).scalar())


def unclaim(conn: Connection, run_id: uuid.UUID, epoch: int) -> bool:
    """running -> queued before anything touched the device (device busy or unreachable, retry later)."""
    return conn.execute(_UNCLAIM, dict(run_id=run_id, epoch=epoch, event=_event_data(QUEUED))).first() is not None


def append_events(conn: Connection, rows: list[dict]) -> None:
    """Append output and note events ({run_id, type, data} each) to their runs' logs."""
    if rows:
        conn.execute(insert(RunEvent), rows)


def mark_started(s: Connection, started: list[tuple[uuid.UUID, int, int | None, datetime | None]]) -> None:
    """Record that commands are running on their devices: (run_id, epoch, pgid, started_at) each,
    the process group being what the reaper kills if the worker is lost."""
    s.execute(_MARK_STARTED, [dict(run_id=run_id, epoch=epoch, pgid=pgid, started_at=started_at)
                              for run_id, epoch, pgid, started_at in started])


def renew_leases(conn: Connection, held: list[tuple[uuid.UUID, int]], lease_seconds: int) -> dict[uuid.UUID, bool]:
    """Extend the DB lease of every (run, epoch) we still hold, in one statement.

    Returns {run_id: cancel_requested} for the runs still held; a run missing from it lost its lease.
    """
    if not held:
        return {}
    rows = conn.execute(_RENEW_LEASES, dict(ids=[run_id for run_id, _ in held], epochs=[epoch for _, epoch in held],
                                            lease_seconds=lease_seconds)).all()
    return {run_id: requested for run_id, requested in rows}


def finish(s: Connection, run_id: uuid.UUID, epoch: int, status: str, **fields):
    """running -> succeeded | failed | canceled, fenced by epoch. fields: any of _RESULT_FIELDS and
    finished_at (default now); the result fields not given are stored empty.

    Returns a row (id, tenant_id, target_id, pgid, started_at, finished_at), or None when the run
    moved on without us.
    """
    if status not in TERMINAL:
        raise ValueError(f"finish: {status!r} is not a terminal status")
    unknown = set(fields) - set(_RESULT_FIELDS) - {"finished_at"}
    if unknown:
        raise ValueError(f"finish: not a result field: {sorted(unknown)}")
    params = {**_RESULT_FIELDS, "finished_at": utcnow(), **fields}
    return s.execute(_FINISH, dict(params, run_id=run_id, epoch=epoch, status=status,
                                   event=_event_data(status, params["error"]))).first()


def hold(s: Connection, run_id: uuid.UUID, epoch: int) -> bool:
    """Lock the run's row for the rest of the transaction if it is still running under `epoch`."""
    return s.execute(_HOLD, dict(run_id=run_id, epoch=epoch)).first() is not None


class CancelConflict(Exception):
    """The run already finished."""


def cancel(conn: Connection, run_id: uuid.UUID) -> Run:
    """Cancel: a queued run ends now; a running run gets cancel_requested_at for its worker to act on."""
    err = {"code": "canceled", "message": "canceled by request"}
    row = conn.execute(_CANCEL_QUEUED, dict(run_id=run_id, error=err, event=_event_data(CANCELED, err))).first()
    if row is None:
        row = conn.execute(_REQUEST_CANCEL, dict(run_id=run_id)).first()
    if row is not None:
        return _run(row)
    row = conn.execute(_CURRENT, dict(run_id=run_id)).first()
    if row is not None and row.status == CANCELED:
        return _run(row)  # repeating a cancel changes nothing
    raise CancelConflict(row.status if row is not None else "missing")


WORKER_LOST = {"code": "worker_lost", "message": "the worker running this run stopped renewing its lease"}


def reap_expired(conn: Connection, lease_seconds: int = 30, slack_seconds: float = 0.0,
                 limit: int = 100) -> tuple[list, list]:
    """Runs whose lease expired: taken over for re-attaching where their command can be re-attached
    (take_over), canceled/worker_lost otherwise. Never started again: agents change files.

    slack_seconds: how long after its timeout a run may still be re-attached. Returns (the rows
    finish() returned for the runs failed, the rows take_over() returned for the runs taken over).
    """
    failed, taken = [], []
    expired = conn.execute(_EXPIRED, dict(limit=limit, slack_seconds=slack_seconds)).all()
    for run_id, epoch, attachable in expired:
        if attachable:
            row = take_over(conn, run_id, epoch, lease_seconds, "its worker stopped renewing the lease")
            if row is not None:
                taken.append(row)
            continue
        # Interrupted, not failed: the seed's `canceled` means "canceled or interrupted"; the cause is the code.
        row = finish(conn, run_id, epoch, CANCELED, error=WORKER_LOST)
        if row is not None:
            failed.append(row)
    return failed, taken


def take_over(conn: Connection, run_id: uuid.UUID, epoch: int, lease_seconds: int, why: str):
    """running -> running, fenced by epoch: the run is up for re-attaching (epoch + 1, no worker).

    Its lease is renewed so the re-attach has time to arrive; a `note` event says why (unless no
    worker had it: taken over again). Returns a row (id, epoch, tenant_id, target_id, pool: its
    device's), or None when the run moved on meanwhile.
    """
    note = json.dumps({"note": f"taken over for re-attaching: {why}"})
    return conn.execute(_TAKE_OVER, dict(run_id=run_id, epoch=epoch, lease_seconds=lease_seconds,
                                         note=note)).first()


def claim_attach(conn: Connection, run_id: uuid.UUID, worker_id: str, lease_seconds: int):
    """running -> running for the one worker that re-attaches to a run taken over (epoch + 1).

    Returns the run's row (what a claim returns, plus pgid, started_at, the output offsets, the
    count of output events written and cancel_requested), or None: not up for re-attaching (another
    worker has it, or it ended).
    """
    note = json.dumps({"note": f"re-attached by worker {worker_id}"})
    return conn.execute(_CLAIM_ATTACH, dict(run_id=run_id, worker_id=worker_id, lease_seconds=lease_seconds,
                                            note=note)).first()


def record_output(conn: Connection, offsets: list[tuple[uuid.UUID, int, int, int]], rows: list[dict]) -> set:
    """Append output events, and the byte offsets they bring each run to, for the runs still held.

    offsets: (run_id, epoch, stdout_offset, stderr_offset) each. Rows of a run whose epoch moved on
    (taken over) are dropped: its new worker streams that output from the offsets recorded before.
    Returns the ids of the runs written.
    """
    held = set()
    if offsets:
        held = set(conn.execute(_RECORD_OFFSETS, dict(
            ids=[o[0] for o in offsets], epochs=[o[1] for o in offsets], outs=[o[2] for o in offsets],
            errs=[o[3] for o in offsets])).scalars())
    append_events(conn, [row for row in rows if row["run_id"] in held])
    return held


def stale_queued(conn: Connection, older_than_seconds: int,
                 limit: int = 500) -> list[tuple[uuid.UUID, uuid.UUID, str, str]]:
    """(id, tenant_id, target_id, its device's pool) of the oldest queued run of each device whose runs
    nobody enqueued or claimed for a while (Redis was down, a message was lost, a wake-up was lost)."""
    rows = conn.execute(_STALE_QUEUED, dict(seconds=older_than_seconds, limit=limit)).all()
    return [tuple(row) for row in rows]


def mark_enqueued(conn: Connection, run_ids: list[uuid.UUID]) -> None:
    """Restart the sweeper's clock for the devices of runs sent again (all their queued runs)."""
    if run_ids:
        conn.execute(_MARK_ENQUEUED, dict(ids=run_ids))
