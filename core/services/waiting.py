"""Long-poll: hold a request until a run is terminal or time runs out, woken by Redis pub/sub.

One listener per process (a thread; a greenlet under gunicorn's gevent workers) holds one pub/sub
connection and fans the nudges out to the waiters: a waiter costs a SUBSCRIBE on that connection
(for the first waiter of a run), not a connection and a subscribe round trip of its own.

The database stays the truth: a nudge only says "read again". A nudge that says the run is not
terminal yet (`output`, a non-terminal status such as `running`, `released`) wakes nobody; any
other (`finished`, `changed`, `cancel`, a terminal status, or a payload this code does not know)
makes each waiter of the run read it once. A lost nudge (Redis down or restarted, a message
published before the subscription took effect) costs at most POLL_SECONDS: every waiter re-reads
the run at least that often.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable

import redis

from core import db
from core.models import TERMINAL, Run
from core.notify import channel
from core.services import runs as run_service

log = logging.getLogger("agentruns.waiting")
POLL_SECONDS = 1.0  # a waiter reads the run at least this often, nudged or not
SUBSCRIBE_SECONDS = 0.25  # how long a waiter waits for its subscription to take effect before reading
RECONNECT_SECONDS = 0.5
# Payloads that say the run is not terminal yet (core.notify, workers): no read needed.
NOT_TERMINAL = frozenset({"output", "queued", "running", "released"})
_IDLE_CHANNEL = "agentruns:waiters"  # always subscribed: the connection stays in pub/sub mode


class _Waiter:
    __slots__ = ("nudged", "subscribed")

    def __init__(self) -> None:
        self.nudged = threading.Event()  # a nudge that calls for a read
        self.subscribed = threading.Event()  # the run's channel is subscribed


class _Listener:
    """This process's one pub/sub connection for long-polls, and the waiters per run channel."""

    def __init__(self, r: redis.Redis):
        self.r = r
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.waiters: dict[str, set[_Waiter]] = {}
        self.subscribed: set[str] = set()  # channels whose SUBSCRIBE Redis confirmed
        self.pubsub: redis.client.PubSub | None = None  # None while (re)connecting
        self.tried = threading.Event()  # the first connection attempt is over (made or failed)
        threading.Thread(target=self._run, daemon=True, name="agentruns-waiting").start()

    def join(self, name: str) -> _Waiter:
        waiter = _Waiter()
        with self.lock:
            waiters = self.waiters.setdefault(name, set())
            waiters.add(waiter)
            if name in self.subscribed:
                waiter.subscribed.set()
            elif len(waiters) == 1 and self.pubsub is not None:
                try:
                    self.pubsub.subscribe(name)  # the listener reads the confirmation
                except (redis.RedisError, OSError) as exc:
                    log.debug("subscribe %s failed: %s", name, exc)  # the listener reconnects
        return waiter

    def leave(self, name: str, waiter: _Waiter) -> None:
        with self.lock:
            waiters = self.waiters.get(name)
            if waiters is None:
                return
            waiters.discard(waiter)
            if waiters:
                return
            del self.waiters[name]
            self.subscribed.discard(name)
            if self.pubsub is not None:
                try:
                    self.pubsub.unsubscribe(name)
                except (redis.RedisError, OSError):
                    pass  # the listener reconnects, subscribing only to the channels with waiters

    @property
    def connected(self) -> bool:
        return self.pubsub is not None

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - never die: waiters fall back to polling meanwhile
                log.debug("long-poll listener: %s; reconnecting", exc)
            self.tried.set()
            with self.lock:
                pubsub, self.pubsub = self.pubsub, None
                self.subscribed.clear()
                for waiters in self.waiters.values():  # a nudge may have been lost: read now
                    for waiter in waiters:
                        waiter.nudged.set()
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
            time.sleep(RECONNECT_SECONDS)

    def _listen(self) -> None:
        pubsub = self.r.pubsub()
        try:
            # Connecting is the slow part (up to the connect timeout while Redis is away): not under
            # the lock every waiter's join and leave take. A waiter that joins meanwhile is subscribed below.
            pubsub.subscribe(_IDLE_CHANNEL)
            with self.lock:
                if self.waiters:
                    pubsub.subscribe(*self.waiters)
                self.pubsub = pubsub
        except BaseException:
            pubsub.close()
            raise
        self.tried.set()
        while True:
            message = pubsub.get_message(timeout=30.0)
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict) -> None:
        kind, name = message["type"], _text(message["channel"])
        with self.lock:
            waiters = self.waiters.get(name)
            if kind == "subscribe":
                if waiters:
                    self.subscribed.add(name)
                    for waiter in waiters:
                        waiter.subscribed.set()
            elif kind == "message" and waiters and _text(message["data"]) not in NOT_TERMINAL:
                for waiter in waiters:
                    waiter.nudged.set()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_listeners: weakref.WeakKeyDictionary[redis.Redis, _Listener] = weakref.WeakKeyDictionary()
_listeners_lock = threading.Lock()


def _listener(r: redis.Redis) -> _Listener:
    with _listeners_lock:
        listener = _listeners.get(r)
        if listener is None or listener.pid != os.getpid():  # none yet, or inherited across a fork
            listener = _listeners[r] = _Listener(r)
        return listener


def _read(run: Run) -> Run:
    # Autocommit: one round trip (no BEGIN, no ROLLBACK on return).
    with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return run_service.get(conn, run.tenant_id, str(run.id))


def wait_terminal(r: redis.Redis, run: Run, seconds: float, *,
                  enqueue: Callable[[Run], object] | None = None) -> Run:
    """Return the run once it is terminal, or its state after `seconds` (`run`: its state as read).

    `enqueue`: for a run just created and not yet published, called once this waiter listens (so
    that no nudge can come before), and `run` is then taken as read.
    """
    if run.status in TERMINAL:
        if enqueue is not None:
            enqueue(run)
        return run
    deadline = time.monotonic() + seconds
    listener = _listener(r)
    name = channel(run.id)
    waiter = listener.join(name)
    try:
        if not listener.connected:  # just started: give it its first connection
            listener.tried.wait(SUBSCRIBE_SECONDS)
        if listener.connected:
            waiter.subscribed.wait(SUBSCRIBE_SECONDS)
        read = enqueue is None
        if enqueue is not None:
            enqueue(run)
        while True:
            if read:  # after subscribing, so a change published just before is not missed
                waiter.nudged.clear()
                run = _read(run)
            read = True
            left = deadline - time.monotonic()
            if run.status in TERMINAL or left <= 0:
                return run
            # Redis down (no listener connection): poll more often.
            waiter.nudged.wait(min(left, POLL_SECONDS if listener.connected else 0.5))
    finally:
        listener.leave(name, waiter)


def waiting_runs(r: redis.Redis) -> dict[uuid.UUID, int]:
    """Waiters per run in this process (for tests and debugging)."""
    listener = _listeners.get(r)
    if listener is None:
        return {}
    with listener.lock:
        return {uuid.UUID(name.rpartition(":")[2]): len(ws) for name, ws in listener.waiters.items()}
