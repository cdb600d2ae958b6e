"""Device blips wait: a run whose command never started because its device was unreachable goes back
to the queue, and the device is tried again with backoff, for up to `device_retry_seconds` (a few
minutes) before its runs fail `device_unreachable`.

Nothing had started on the device, so waiting is safe. The state is one small Redis hash per device
(when it first failed, how many tries, when to try next), shared by every worker and gone by itself
once failures stop; no worker thread waits: the retry is a delayed runs.execute message, and a
delivery that finds the device in its backoff returns at once (checked by the slot script, in the
round trip that takes the slot: workers.leases).
"""
from __future__ import annotations

import logging
import uuid

from core.messages import Queued, enqueue
from drivers.base import CONNECTION_LOST, DEVICE_UNREACHABLE, DriverError

log = logging.getLogger("agentruns.worker")

MAX_DELAY = 15.0  # seconds between tries at most: 1, 2, 4, 8, then 15
# Errors a later try may not have: the device (or the way to it) is away. Refused keys and host keys
# are not among them.
TRANSIENT = (DEVICE_UNREACHABLE, CONNECTION_LOST)

# KEYS[1]: the device's hash. ARGV: window (s), max delay (s). Counts this try on the Redis clock (the
# one the deliveries' slot script reads retry_at with) and returns the seconds until the next try as a
# string, or "" once the device has been away for the whole window.
_FAILED = """
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local since = tonumber(redis.call('hget', KEYS[1], 'since') or now)
local tries = redis.call('hincrby', KEYS[1], 'tries', 1)
local window = tonumber(ARGV[1])
redis.call('hset', KEYS[1], 'since', tostring(since))
redis.call('expire', KEYS[1], math.ceil(window + 60))
local away = now - since
if away >= window then return "" end
local wait = math.min(math.min(tonumber(ARGV[2]), 2 ^ (tries - 1)), window - away)
redis.call('hset', KEYS[1], 'retry_at', tostring(now + wait))
return tostring(wait)"""


def key(tenant_id: uuid.UUID, device_id: str) -> str:
    return f"agentruns:device-down:{tenant_id}:{device_id}"


def retryable(exc: DriverError) -> bool:
    """A failure before the command started that a later try may not have."""
    return exc.before_start and exc.code in TRANSIENT


class DeviceBackoff:
    """The backoff state of devices in Redis, and the delayed retries."""

    def __init__(self, r, window_seconds: float, sender):
        self.r, self.window, self.sender = r, window_seconds, sender
        self._failed = r.register_script(_FAILED)
        # Devices this process saw in a backoff: the first run that reaches one ends it for everyone.
        self._suspects: set[tuple[uuid.UUID, str]] = set()

    def failed(self, tenant_id: uuid.UUID, device_id: str) -> float | None:
        """Count a failed try; seconds until the next one (doubling from 1 up to MAX_DELAY, within the window), or None
        once the device was away too long. One round trip."""
        wait = self._failed(keys=[key(tenant_id, device_id)], args=[self.window, MAX_DELAY])
        self._suspects.add((tenant_id, device_id))
        return float(wait) if wait else None

    def suspect(self, tenant_id: uuid.UUID, device_id: str) -> None:
        """A delivery took a slot on a device with a backoff record (leases.TAKEN_AFTER_BACKOFF)."""
        self._suspects.add((tenant_id, device_id))

    def reached(self, tenant_id: uuid.UUID, device_id: str) -> None:
        """A run reached the device: a backoff this process saw ends, so its next failure starts anew."""
        if (tenant_id, device_id) in self._suspects:
            self._suspects.discard((tenant_id, device_id))
            self.r.delete(key(tenant_id, device_id))

    def retry_later(self, run: Queued, seconds: float) -> None:
        """A delayed runs.execute for the run's device (the sweeper re-sends it if this is lost)."""
        enqueue(self.sender(), [run], countdown=seconds)
