"""Device blips wait: a run whose command never started because its device was unreachable goes back
to the queue, and the device is tried again with backoff, for up to `device_retry_seconds` (a few
minutes) before its runs fail `device_unreachable`.

Nothing had started on the device, so waiting is safe. The state is one small Redis hash per device
(when it first failed, how many tries), shared by every worker and gone by itself once failures stop;
no worker thread waits: the retry is a delayed runs.execute message, and a delivery that finds the
device in its backoff returns at once.
"""
from __future__ import annotations

import logging
import time
import uuid

from core.messages import Queued, enqueue
from drivers.base import CONNECTION_LOST, DEVICE_UNREACHABLE, DriverError

log = logging.getLogger("agentruns.worker")

MAX_DELAY = 15.0  # seconds between tries at most
# Errors a later try may not have: the device (or the way to it) is away. Refused keys and host keys
# are not among them.
TRANSIENT = (DEVICE_UNREACHABLE, CONNECTION_LOST)

# KEYS[1]: the device's hash. ARGV: now (s), window (s). Returns {since, tries} after counting this try.
_FAILED = """
local since = redis.call('hget', KEYS[1], 'since')
if not since then since = ARGV[1] end
local tries = redis.call('hincrby', KEYS[1], 'tries', 1)
redis.call('hset', KEYS[1], 'since', since)
redis.call('expire', KEYS[1], math.ceil(tonumber(ARGV[2]) + 60))
return {since, tries}"""


def key(tenant_id: uuid.UUID, device_id: str) -> str:
    return f"agentruns:device-down:{tenant_id}:{device_id}"


def delay(tries: int) -> float:
    """Seconds before try number `tries + 1`: 1, 2, 4, 8, then 15."""
    return min(MAX_DELAY, 2.0 ** (tries - 1))


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
        """Count a failed try; seconds until the next one, or None once the device was away too long."""
        now = time.time()
        since, tries = self._failed(keys=[key(tenant_id, device_id)], args=[now, self.window])
        self._suspects.add((tenant_id, device_id))
        away = now - float(since)
        if away >= self.window:
            return None
        wait = min(delay(int(tries)), self.window - away)
        self.r.hset(key(tenant_id, device_id), "retry_at", now + wait)
        return wait

    def waiting(self, tenant_id: uuid.UUID, device_id: str) -> float:
        """Seconds a delivery should leave the device alone (0: try it)."""
        retry_at = self.r.hget(key(tenant_id, device_id), "retry_at")
        if retry_at is None:
            return 0.0
        self._suspects.add((tenant_id, device_id))
        return max(0.0, float(retry_at) - time.time())

    def reached(self, tenant_id: uuid.UUID, device_id: str) -> None:
        """A run reached the device: a backoff this process saw ends, so its next failure starts anew."""
        if (tenant_id, device_id) in self._suspects:
            self._suspects.discard((tenant_id, device_id))
            self.r.delete(key(tenant_id, device_id))

    def retry_later(self, run: Queued, seconds: float) -> None:
        """A delayed runs.execute for the run's device (the sweeper re-sends it if this is lost)."""
        enqueue(self.sender(), [run], countdown=seconds)
