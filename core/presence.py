"""What the workers leave in Redis for the operator: their heartbeats (live workers, the pools they
serve, their free slots) and each device's last successful connect. The workers write it
(workers.presence); the fleet stats read it (core.services.fleet_stats). One definition of the keys
and scripts here, so the two sides cannot disagree.

Times are Redis's clock (as in workers.leases and workers.device_backoff), so the hosts' clocks do
not matter. Everything expires by itself: a worker that dies leaves the live set within TTL.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

import redis

from core.messages import DEFAULT_POOL, POOL_QUEUE_PREFIX, QUEUE

WORKERS_KEY = "agentruns:workers"  # sorted set: worker id -> when its heartbeat expires (ms, Redis clock)
WORKER_PREFIX = "agentruns:worker:"  # + worker id: its last heartbeat (JSON), expiring with it
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL_SECONDS = 15.0
# A connect record outlives any retry window by far; a deleted device's record goes by itself.
CONNECTED_TTL_SECONDS = 30 * 86400

# KEYS[1]: the live set, KEYS[2]: the worker's record. ARGV: worker id, record (JSON), ttl (ms).
_BEAT = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('set', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('zadd', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
return 1"""
# KEYS[1]: the live set. ARGV[1]: the records' prefix. The live workers' records, oldest first; the
# expired ones leave the set.
_LIVE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('zrange', KEYS[1], 0, -1)) do
  local record = redis.call('get', ARGV[1] .. id)
  if record then table.insert(out, record) end
end
return out"""
# KEYS[1]: the device's connect record. ARGV[1]: ttl (s). Stores the Redis time (s, fractional).
_CONNECTED = """
local t = redis.call('time')
redis.call('set', KEYS[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'EX', tonumber(ARGV[1]))
return 1"""


def worker_key(worker_id: str) -> str:
    return WORKER_PREFIX + worker_id


def connected_key(tenant_id: uuid.UUID | str, device_id: str) -> str:
    return f"agentruns:device-connected:{tenant_id}:{device_id}"


def backoff_key(tenant_id: uuid.UUID | str, device_id: str) -> str:
    """The device's backoff hash (written by workers.device_backoff: `since`, `tries`, `retry_at`)."""
    return f"agentruns:device-down:{tenant_id}:{device_id}"


def pool_of_queue(queue: str) -> str | None:
    """The worker pool a queue serves (the inverse of core.messages.queue_for); None for other queues."""
    if queue == QUEUE:
        return DEFAULT_POOL
    if queue.startswith(POOL_QUEUE_PREFIX) and len(queue) > len(POOL_QUEUE_PREFIX):
        return queue[len(POOL_QUEUE_PREFIX):]
    return None


def beat(r: redis.Redis, worker_id: str, record: dict, ttl_seconds: float = HEARTBEAT_TTL_SECONDS) -> None:
    """Publish a worker's heartbeat (one round trip): it counts as live for ttl_seconds."""
    r.eval(_BEAT, 2, WORKERS_KEY, worker_key(worker_id), worker_id, json.dumps(record), int(ttl_seconds * 1000))


def leave(r: redis.Redis, worker_id: str) -> None:
    """A worker stopping leaves the live set at once."""
    pipe = r.pipeline()
    pipe.zrem(WORKERS_KEY, worker_id)
    pipe.delete(worker_key(worker_id))
    pipe.execute()


def live_workers(r: redis.Redis) -> list[dict]:
    """The heartbeats of the live workers (one round trip)."""
    out = []
    for raw in r.eval(_LIVE, 1, WORKERS_KEY, WORKER_PREFIX):
        try:
            out.append(json.loads(raw))
        except ValueError:  # not ours: never fail the stats for it
            continue
    return out


def device_connected(r: redis.Redis, tenant_id: uuid.UUID | str, device_id: str) -> None:
    """Record that a worker connected to the device just now (one round trip)."""
    r.eval(_CONNECTED, 1, connected_key(tenant_id, device_id), CONNECTED_TTL_SECONDS)


def device_health(r: redis.Redis, devices: Iterable[tuple[uuid.UUID | str, str]]) -> list[dict]:
    """For each (tenant id, device id): `last_connected` (Redis time, s, or None), `connect_failures` (the
    failed tries of its current backoff, 0 without one) and `first_failure` (s, or None). One round trip."""
    devices = list(devices)
    pipe = r.pipeline(transaction=False)
    for tenant_id, device_id in devices:
        pipe.get(connected_key(tenant_id, device_id))
        pipe.hmget(backoff_key(tenant_id, device_id), "tries", "since")
    answers = pipe.execute() if devices else []
    out = []
    for i in range(len(devices)):
        connected, (tries, since) = answers[2 * i], answers[2 * i + 1]
        out.append({"last_connected": _number(connected), "connect_failures": int(_number(tries) or 0),
                    "first_failure": _number(since) if tries else None})
    return out


def _number(raw) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
