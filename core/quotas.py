"""Per-tenant quotas: devices, runs in flight (queued or running), runs created per minute.

Settings AGENTRUNS_QUOTA_DEVICES, AGENTRUNS_QUOTA_RUNS_IN_FLIGHT, AGENTRUNS_QUOTA_RUNS_PER_MINUTE (0: no
quota). Creating beyond one raises QuotaExceeded (the API's 429 `quota_exceeded`, with Retry-After).

Each check runs in the creating transaction under a per-tenant advisory lock held until it commits, so
creates on any number of API processes cannot together pass a quota: the next create waits and then
counts the row just inserted. The lock is taken only while a quota is set. Runs per minute is a sliding
window over runs.created_at (ix_runs_tenant_created answers it), exact across processes and without
Redis; every count stops at the quota, so a check costs at most `quota` index entries.
"""
from __future__ import annotations

import math
import uuid
from datetime import timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from agentruns.vocabulary import QUEUED, RUNNING
from core.config import Settings
from core.errors import QuotaExceeded
from core.models import Device, Run

WINDOW = timedelta(seconds=60)
IN_FLIGHT_RETRY_SECONDS = 10  # runs take minutes; a caller retrying sooner would only be refused again
DEVICES_RETRY_SECONDS = 60  # a device slot frees only when the tenant deletes one
# pg_advisory_xact_lock(space, hashtext(tenant)): one lock space for devices, one for runs.
_DEVICES_LOCK, _RUNS_LOCK = 7365501, 7365502

_LOCK = select(func.pg_advisory_xact_lock(bindparam("space"), func.hashtext(bindparam("tenant"))))
_DEVICES = select(func.count()).select_from(
    select(Device.id).where(Device.tenant_id == bindparam("tenant_id")).limit(bindparam("limit")).subquery())
_IN_FLIGHT = select(func.count()).select_from(
    select(Run.id).where(Run.tenant_id == bindparam("tenant_id"), Run.status.in_((QUEUED, RUNNING)))
    .limit(bindparam("limit")).subquery())
# clock_timestamp(), not now(): the transaction may have started well before it got the lock.
_recent = (select(Run.created_at).where(Run.tenant_id == bindparam("tenant_id"),
                                        Run.created_at > func.clock_timestamp() - WINDOW)
           .order_by(Run.created_at.desc()).limit(bindparam("limit")).subquery())
_RECENT = select(func.count(), func.extract("epoch", func.min(_recent.c.created_at) + WINDOW - func.clock_timestamp())
                 ).select_from(_recent)


def _lock(conn: Connection | Session, space: int, tenant_id: uuid.UUID) -> None:
    conn.execute(_LOCK, {"space": space, "tenant": str(tenant_id)})


def check_devices(conn: Connection | Session, tenant_id: uuid.UUID, limit: int) -> None:
    """Before adding a device: QuotaExceeded when the tenant has `limit` devices (0: no quota)."""
    if limit <= 0:
        return
    _lock(conn, _DEVICES_LOCK, tenant_id)
    if conn.execute(_DEVICES, {"tenant_id": tenant_id, "limit": limit}).scalar_one() >= limit:
        raise QuotaExceeded(f"this tenant has {limit} devices, its quota (AGENTRUNS_QUOTA_DEVICES): delete one "
                            "first", details={"quota": "devices", "limit": limit}, retry_after=DEVICES_RETRY_SECONDS)


def run_check_needed(settings: Settings) -> bool:
    """Whether check_run() has a quota to check (and so a lock to take in the creating transaction)."""
    return settings.quota_runs_in_flight > 0 or settings.quota_runs_per_minute > 0


def check_run(conn: Connection | Session, tenant_id: uuid.UUID, settings: Settings) -> None:
    """Before creating a run: QuotaExceeded when the tenant has quota_runs_in_flight runs queued or
    running, or created quota_runs_per_minute runs in the last 60 seconds."""
    if not run_check_needed(settings):
        return
    in_flight, per_minute = settings.quota_runs_in_flight, settings.quota_runs_per_minute
    _lock(conn, _RUNS_LOCK, tenant_id)
    if in_flight > 0:
        live = conn.execute(_IN_FLIGHT, {"tenant_id": tenant_id, "limit": in_flight}).scalar_one()
        if live >= in_flight:
            raise QuotaExceeded(f"this tenant has {in_flight} runs queued or running, its quota "
                                "(AGENTRUNS_QUOTA_RUNS_IN_FLIGHT)", details={"quota": "runs_in_flight",
                                                                            "limit": in_flight},
                                retry_after=IN_FLIGHT_RETRY_SECONDS)
    if per_minute > 0:
        count, frees_in = conn.execute(_RECENT, {"tenant_id": tenant_id, "limit": per_minute}).one()
        if count >= per_minute:
            raise QuotaExceeded(f"this tenant created {per_minute} runs in the last minute, its quota "
                                "(AGENTRUNS_QUOTA_RUNS_PER_MINUTE)",
                                details={"quota": "runs_per_minute", "limit": per_minute},
                                retry_after=max(1, math.ceil(float(frees_in or 0))))
