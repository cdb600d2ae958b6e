"""Redis leases: a per-run lock and a per-device semaphore, both with tokens and expiry.

Both are renewed by the supervisor's heartbeat. A crashed worker's leases simply expire. PostgreSQL
(the epoch fence in core.runstate) stays the final word; these keep two workers off one run and keep
a device within its max_concurrent_runs.
"""
from __future__ import annotations

import secrets
from typing import NamedTuple

import redis

_LOCK_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"""
_LOCK_RELEASE_NOTIFY = """
local released = 0
if redis.call('get', KEYS[1]) == ARGV[1] then released = redis.call('del', KEYS[1]) end
redis.call('publish', ARGV[2], ARGV[3])
return released"""
# Slots: a sorted set of holder tokens scored by expiry (ms, Redis clock, so hosts' clocks don't matter).
# A delivery that finds the device full sets the device's pending mark (KEYS[2]); a holder releasing
# its slot takes the mark and, if it was set, looks for queued runs once more.
_SLOT_ACQUIRE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local acquired = 1
{backoff}
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if redis.call('zcard', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('pexpire', KEYS[1], tonumber(ARGV[2]) * 2)
  return acquired
end
redis.call('set', KEYS[2], '1', 'PX', tonumber(ARGV[2]))
return 0"""
# A delivery also checks the device's backoff (workers.device_backoff; KEYS[3], retry_at on this
# Redis clock) in the same round trip: -1 while its retry is more than a second away, 2 for a slot
# taken while the device has a backoff record (its first run that reaches the device ends it).
_BACKOFF_CHECK = """
local retry = redis.call('hget', KEYS[3], 'retry_at')
if retry then
  if tonumber(retry) * 1000 - now > 1000 then return -1 end
  acquired = 2
end"""
BACKING_OFF, TAKEN_AFTER_BACKOFF = -1, 2
_SLOT_RELEASE = """
redis.call('zrem', KEYS[1], ARGV[1])
local pending = redis.call('get', KEYS[2])
if pending then redis.call('del', KEYS[2]) return 1 end
return 0"""
# A renewal puts a lost slot back (Redis restarted empty, or renewals failed for a whole lease): the
# run still occupies the device, so the device's count must include it. It returns whether the slot
# was still held, so the run's delivery claims no more runs under a slot it had lost.
_SLOT_RENEW = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('zscore', KEYS[1], ARGV[2])
redis.call('zadd', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('pexpire', KEYS[1], tonumber(ARGV[1]) * 2)
return held and 1 or 0"""


class Slot(NamedTuple):
    """One holder's place in a device's slot set, and the device's pending mark."""

    key: str
    token: str
    pending_key: str


def run_lock_key(run_id) -> str:
    return f"agentruns:run-lock:{run_id}"


def slots_key(tenant_id, device_id) -> str:
    return f"agentruns:device-slots:{tenant_id}:{device_id}"


def pending_key(tenant_id, device_id) -> str:
    return f"agentruns:device-pending:{tenant_id}:{device_id}"


def new_token() -> str:
    return secrets.token_hex(12)


class Leases:
    """Script handles bound to one Redis client."""

    def __init__(self, r: redis.Redis):
        self.r = r
        self._extend = r.register_script(_LOCK_EXTEND)
        self._release_notify = r.register_script(_LOCK_RELEASE_NOTIFY)
        self._slot_acquire = r.register_script(_SLOT_ACQUIRE.replace("{backoff}", ""))
        self._slot_acquire_serving = r.register_script(_SLOT_ACQUIRE.replace("{backoff}", _BACKOFF_CHECK))
        self._slot_release = r.register_script(_SLOT_RELEASE)
        self._slot_renew = r.register_script(_SLOT_RENEW)

    def lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(self.r.set(key, token, nx=True, px=ttl_ms))

    def extend(self, key: str, token: str, ttl_ms: int, client=None) -> bool:
        return bool(self._extend(keys=[key], args=[token, ttl_ms], client=client))

    def unlock(self, key: str, token: str, notify: str) -> None:
        """Release the lock if we still hold it, and publish "finished" on the `notify` channel."""
        self._release_notify(keys=[key], args=[token, notify, "finished"])

    def acquire_slot(self, slot: Slot, limit: int, ttl_ms: int) -> bool:
        """Take a slot if fewer than `limit` are held; otherwise set the device's pending mark."""
        return bool(self._slot_acquire(keys=[slot.key, slot.pending_key], args=[limit, ttl_ms, slot.token]))

    def acquire_serving_slot(self, slot: Slot, limit: int, ttl_ms: int, backoff_key: str) -> int:
        """acquire_slot for a delivery, with the device's backoff checked in the same round trip:
        1 or TAKEN_AFTER_BACKOFF (taken), 0 (full: pending mark set) or BACKING_OFF (not tried)."""
        return int(self._slot_acquire_serving(keys=[slot.key, slot.pending_key, backoff_key],
                                              args=[limit, ttl_ms, slot.token]))

    def renew_slot(self, key: str, token: str, ttl_ms: int, client=None) -> bool:
        return bool(self._slot_renew(keys=[key], args=[ttl_ms, token], client=client))

    def release_slot(self, slot: Slot) -> bool:
        """Give the slot back; True if a delivery found the device full meanwhile (the pending mark)."""
        return bool(self._slot_release(keys=[slot.key, slot.pending_key], args=[slot.token]))
