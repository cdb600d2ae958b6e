"""This worker's heartbeat in Redis (core.presence): the pools it serves, its concurrency, the runs it
holds and its free slots, every HEARTBEAT_SECONDS with a TTL of HEARTBEAT_TTL_SECONDS, so the fleet
stats (GET /api/v1/admin/stats, the agentruns_pool_* gauges) count live workers per pool. Also the
record of a device's last successful connect (`device_connected`, called by the runner).

Started by Celery's worker_ready signal and stopped by worker_shutdown (connected below, when
workers.tasks imports this module): nothing runs at import. A worker that dies without stopping
leaves the live set when its TTL lapses.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

from celery.signals import worker_ready, worker_shutdown

from core import presence
from core.messages import DEFAULT_POOL
from workers import context

log = logging.getLogger("agentruns.worker")

POOLS_ENV = "AGENTRUNS_WORKER_POOLS"  # comma-separated; set by `agentruns worker --pool`
CONCURRENCY_ENV = "AGENTRUNS_WORKER_CONCURRENCY"


class Heartbeat:
    """A daemon thread publishing one worker's record until stopped. Every part it reads is a callable,
    so it reads the worker's state afresh at each beat (queues added or canceled, a shutdown begun)."""

    def __init__(self, r, worker_id: str, name: str, pools: Callable[[], list[str]], concurrency: int,
                 in_flight: Callable[[], int], busy: Callable[[], int], draining: Callable[[], bool],
                 interval: float = presence.HEARTBEAT_SECONDS, ttl: float = presence.HEARTBEAT_TTL_SECONDS):
        self.r, self.worker_id, self.name = r, worker_id, name
        self.pools, self.concurrency, self.in_flight, self.busy, self.draining = (
            pools, concurrency, in_flight, busy, draining)
        self.interval, self.ttl = interval, ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict:
        """What this beat publishes. Free slots: the concurrency less the task threads busy (a run holds
        one), none while draining."""
        in_flight, draining = self.in_flight(), self.draining()
        used = max(in_flight, self.busy())
        return {"id": self.worker_id, "name": self.name, "pools": self.pools(), "concurrency": self.concurrency,
                "runs_in_flight": in_flight, "free_slots": 0 if draining else max(0, self.concurrency - used),
                "draining": draining, "pid": os.getpid()}

    def beat(self) -> None:
        presence.beat(self.r, self.worker_id, self.record(), self.ttl)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="agentruns-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and leave the live set at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
        try:
            presence.leave(self.r, self.worker_id)
        except Exception as exc:  # the record lapses by itself
            log.warning("presence: could not leave the live set: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception as exc:  # Redis away: the record lapses, and the next beat puts it back
                log.warning("presence: heartbeat failed: %s", exc)
            self._stop.wait(self.interval)


_current: Heartbeat | None = None
_lock = threading.Lock()


def env_pools() -> list[str]:
    """AGENTRUNS_WORKER_POOLS as a list (default: the default pool)."""
    names = [p.strip() for p in os.environ.get(POOLS_ENV, "").split(",") if p.strip()]
    return list(dict.fromkeys(names)) or [DEFAULT_POOL]


def consumed_pools(consumer) -> list[str]:
    """The pools whose queues the worker consumes now (queues added or canceled at run time included);
    AGENTRUNS_WORKER_POOLS when the consumer's queues cannot be read."""
    try:
        queues = list(consumer.app.amqp.queues.consume_from)
    except Exception:
        return env_pools()
    return list(dict.fromkeys(p for p in map(presence.pool_of_queue, queues) if p is not None))


def _concurrency(consumer) -> int:
    value = getattr(getattr(consumer, "controller", None), "concurrency", None)
    try:
        return int(value or os.environ.get(CONCURRENCY_ENV) or 0)
    except (TypeError, ValueError):
        return 0


def _busy() -> int:
    from celery.worker import state

    return len(state.active_requests)


@worker_ready.connect
def _start(sender=None, **_) -> None:
    """worker_ready: start this process's heartbeat (once; the signal comes again after a reconnect)."""
    global _current
    with _lock:
        if _current is not None:
            return
        ctx = context.get()
        _current = Heartbeat(ctx.redis, ctx.worker_id, str(getattr(sender, "hostname", "") or ctx.worker_id),
                             pools=lambda: consumed_pools(sender), concurrency=_concurrency(sender),
                             in_flight=lambda: len(ctx.supervisor.active), busy=_busy,
                             draining=lambda: ctx.supervisor.draining)
        _current.start()


@worker_shutdown.connect
def _stop(**_) -> None:
    """worker_shutdown (the runs are over or handed over): leave the live set now, not after the TTL."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            _current = None


CONNECT_RECORD_EVERY = 1.0  # seconds: a busy device's starts are recorded at most this often per process
_recorded: dict[tuple[uuid.UUID, str], float] = {}
_recorded_lock = threading.Lock()


def device_connected(r, tenant_id: uuid.UUID, device_id: str) -> None:
    """Record that this worker just connected to the device (its command started; one Redis round
    trip, skipped when this process recorded one for the device less than CONNECT_RECORD_EVERY ago:
    a second's precision is all the fleet stats show, and a busy device starts many runs a second).
    Never raises: a lost record only leaves the device's last connect older."""
    now, key = time.monotonic(), (tenant_id, device_id)
    with _recorded_lock:
        if now - _recorded.get(key, float("-inf")) < CONNECT_RECORD_EVERY:
            return
        _recorded[key] = now
    try:
        presence.device_connected(r, tenant_id, device_id)
    except Exception as exc:
        log.warning("presence: could not record the connect to device %s: %s", device_id, exc)
