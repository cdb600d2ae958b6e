"""The fleet's figures for autoscaling and on-call, all tenants: per pool (queued runs, the oldest one's
age, runs in flight, devices and their slots, live workers and their free slots), per device, and per
live worker. The operator's GET /api/v1/admin/stats and the workers' Prometheus gauges both read them
here.

Runs are counted from PostgreSQL through the live-runs index (ix_runs_live: only queued and running
rows), grouped per device, then joined to the devices; workers and device connects come from Redis
(core.presence). When Redis cannot be read, its figures are None and the rest is still answered.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from sqlalchemy import text
from sqlalchemy.engine import Connection

from core import presence

log = logging.getLogger("agentruns.stats")

# Queued and running runs per device (the partial index's predicate, so that index is what is read).
_LIVE = """
WITH live AS (
  SELECT tenant_id, target_id,
         count(*) FILTER (WHERE status = 'queued') AS queued,
         count(*) FILTER (WHERE status = 'running') AS running,
         min(created_at) FILTER (WHERE status = 'queued') AS oldest
  FROM runs WHERE status IN ('queued', 'running')
  GROUP BY tenant_id, target_id)
"""
_POOLS = _LIVE + """
SELECT d.pool, count(*) AS devices, coalesce(sum(d.max_concurrent_runs), 0) AS device_slots,
       coalesce(sum(l.queued), 0) AS queued_runs, coalesce(sum(l.running), 0) AS runs_in_flight,
       extract(epoch FROM now() - min(l.oldest))::float8 AS oldest_queued_seconds
FROM devices d LEFT JOIN live l ON l.tenant_id = d.tenant_id AND l.target_id = d.id
{where}
GROUP BY d.pool ORDER BY d.pool"""
_DEVICES = _LIVE + """
SELECT d.tenant_id, t.name AS tenant, d.id, d.pool, d.max_concurrent_runs,
       coalesce(l.queued, 0) AS queued_runs, coalesce(l.running, 0) AS runs_in_flight,
       extract(epoch FROM now() - l.oldest)::float8 AS oldest_queued_seconds
FROM devices d JOIN tenants t ON t.id = d.tenant_id
LEFT JOIN live l ON l.tenant_id = d.tenant_id AND l.target_id = d.id
{where}
ORDER BY coalesce(l.queued, 0) DESC, coalesce(l.running, 0) DESC, d.pool, t.name, d.id"""


def _statement(template: str, pool: str | None):
    return text(template.format(where="WHERE d.pool = :pool" if pool is not None else "")), (
        {"pool": pool} if pool is not None else {})


def pool_figures(conn: Connection, pool: str | None = None) -> list[dict]:
    """Per pool that has devices (or only `pool`): queued_runs, oldest_queued_seconds (None when none is
    queued), runs_in_flight, devices, device_slots (their max_concurrent_runs summed). One query."""
    stmt, params = _statement(_POOLS, pool)
    return [dict(row._mapping) for row in conn.execute(stmt, params)]


def device_figures(conn: Connection, pool: str | None = None) -> list[dict]:
    """Per device (of every tenant, or of `pool`), busiest first: tenant_id, tenant (its name), id,
    pool, max_concurrent_runs, queued_runs, runs_in_flight, oldest_queued_seconds. One query."""
    stmt, params = _statement(_DEVICES, pool)
    return [dict(row._mapping) for row in conn.execute(stmt, params)]


def live_workers(r: redis.Redis) -> list[dict] | None:
    """The live workers' heartbeats (id, name, pools, concurrency, runs_in_flight, free_slots,
    draining), by name; None when Redis cannot be read."""
    try:
        found = presence.live_workers(r)
    except redis.RedisError as exc:
        log.warning("stats: could not read the live workers: %s", exc)
        return None
    return sorted((_worker(w) for w in found), key=lambda w: (w["name"], w["id"]))


def _worker(record: dict) -> dict:
    concurrency = int(record.get("concurrency") or 0)
    return {"id": str(record.get("id", "")), "name": str(record.get("name") or record.get("id", "")),
            "pools": [str(p) for p in record.get("pools", [])], "concurrency": concurrency,
            "runs_in_flight": int(record.get("runs_in_flight") or 0),
            "free_slots": max(0, min(concurrency, int(record.get("free_slots") or 0))),
            "draining": bool(record.get("draining"))}


def with_workers(pools: list[dict], workers: list[dict] | None) -> list[dict]:
    """The pools' figures with live_workers and free_worker_slots added (None when the workers are
    unknown), plus the pools that only workers name. A draining worker counts in neither (it takes
    no new run); a worker serving several pools counts in each."""
    by_name = {p["pool"]: {**p, "live_workers": 0, "free_worker_slots": 0} for p in pools}
    for worker in workers or ():
        for name in worker["pools"]:
            pool = by_name.setdefault(name, {"pool": name, "devices": 0, "device_slots": 0, "queued_runs": 0,
                                             "runs_in_flight": 0, "oldest_queued_seconds": None,
                                             "live_workers": 0, "free_worker_slots": 0})
            if not worker["draining"]:
                pool["live_workers"] += 1
                pool["free_worker_slots"] += worker["free_slots"]
    out = [by_name[name] for name in sorted(by_name)]
    if workers is None:
        for pool in out:
            pool["live_workers"] = pool["free_worker_slots"] = None
    return out


def with_health(r: redis.Redis, devices: list[dict]) -> list[dict]:
    """The devices' figures with last_connected_at, connect_failures (the failed tries of the device's
    current backoff: workers.device_backoff) and first_failure_at added; None when Redis cannot be read."""
    try:
        health = presence.device_health(r, ((d["tenant_id"], d["id"]) for d in devices))
    except redis.RedisError as exc:
        log.warning("stats: could not read the devices' connect records: %s", exc)
        health = [{"last_connected": None, "connect_failures": None, "first_failure": None}] * len(devices)
    return [{**d, "last_connected_at": _at(h["last_connected"]), "connect_failures": h["connect_failures"],
             "first_failure_at": _at(h["first_failure"])} for d, h in zip(devices, health, strict=True)]


def snapshot(conn: Connection, r: redis.Redis, pool: str | None = None) -> dict:
    """Everything GET /api/v1/admin/stats answers: {"pools", "devices", "workers"} (of `pool` only, when given)."""
    workers = live_workers(r)
    if workers is not None and pool is not None:
        workers = [w for w in workers if pool in w["pools"]]
    pools = [p for p in with_workers(pool_figures(conn, pool), workers) if pool is None or p["pool"] == pool]
    return {"pools": pools, "devices": with_health(r, device_figures(conn, pool)), "workers": workers}


def _at(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None
