"""A per-process pool of authenticated SSH transports: one channel per run, several runs per transport.

sshd limits sessions per connection (MaxSessions, default 10), so a transport carries at most
`max_channels` runs (default 8, leaving room for the kill/ping channels) and the pool opens another
transport when all are full, or when the server refuses a channel anyway. Dead transports are
dropped, idle ones closed after `idle_timeout`. Only one connect per key runs at a time: a burst of
runs to a new device waits for that connect instead of opening a connection each.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable

import paramiko

from .base import DEVICE_UNREACHABLE, DriverError

_CHANNEL_TRIES = 20  # refusals and dead transports tolerated while opening one channel
# Channels a short command may open on a connection beyond max_channels: sshd's MaxSessions defaults
# to 10, the runs take 8.
SPARE_CHANNELS = 2


def close_quietly(chan: paramiko.Channel) -> None:
    """Close a channel; closing sends a message, which raises when the connection has just died (the
    channel goes with it)."""
    try:
        chan.close()
    except (EOFError, OSError, paramiko.SSHException):
        pass


class PooledTransport:
    """One transport and how many runs are using it."""

    __slots__ = ("transport", "channels", "full", "idle_since", "facts")

    def __init__(self, transport: paramiko.Transport):
        self.transport = transport
        self.facts: object = None  # what the driver learned about the device over this connection
        self.channels = 0
        self.full = False  # the server refused a channel; cleared when one of ours closes
        self.idle_since = time.monotonic()


class _Pending:
    """A connect in progress that other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: DriverError | None = None


class TransportPool:
    """Thread-safe pool of transports keyed by device id and connection parameters."""

    def __init__(self, max_channels: int = 8, idle_timeout: float = 300.0):
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.max_channels = max_channels
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._conns: dict[Hashable, list[PooledTransport]] = {}
        self._pending: dict[Hashable, _Pending] = {}
        self._learned: dict[Hashable, str] = {}  # host keys accepted on first use, per key
        self._next_sweep = time.monotonic() + min(idle_timeout, 60.0)

    def open_session(self, key: Hashable, connect: Callable[[], paramiko.Transport],
                     timeout: float = 10.0, spare: bool = False) -> tuple[PooledTransport, paramiko.Channel]:
        """Return (conn, new session channel); call release(conn) when the channel is done.

        spare: for a short command (a kill, a spool removal, a ping), which may use the room kept on
        each connection beyond max_channels (SPARE_CHANNELS) instead of opening another connection.
        """
        last: Exception | None = None
        for _ in range(_CHANNEL_TRIES):
            conn = self._acquire(key, connect, self.max_channels + (SPARE_CHANNELS if spare else 0))
            try:
                return conn, conn.transport.open_session(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                last = exc
                if conn.transport.is_active():
                    # The server refused the channel (usually MaxSessions): this connection is full
                    # from its point of view. paramiko may report that as a bare SSHException when
                    # two opens fail at once (the refusal is kept in one transport-wide slot), so
                    # only a dead transport is dropped; dropping a live one would kill its runs.
                    with self._lock:
                        conn.channels -= 1
                        conn.full = True
                else:
                    self.release(conn)
                    self._drop(key, conn)
        raise DriverError(DEVICE_UNREACHABLE, f"could not open an SSH channel: {last}", before_start=True)

    def release(self, conn: PooledTransport) -> None:
        """Give back the channel slot taken by open_session."""
        with self._lock:
            conn.channels -= 1
            conn.full = False
            if conn.channels == 0:
                conn.idle_since = time.monotonic()

    def transports(self, key: Hashable | None = None) -> list[paramiko.Transport]:
        """Live transports in the pool (for one key, or all), for metrics and tests."""
        with self._lock:
            groups = [self._conns.get(key, [])] if key is not None else list(self._conns.values())
            return [c.transport for conns in groups for c in conns if c.transport.is_active()]

    def learned_host_key(self, key: Hashable) -> str | None:
        """The host key line accepted on first use for this key in this process, if any."""
        with self._lock:
            return self._learned.get(key)

    def learn_host_key(self, key: Hashable, line: str) -> None:
        """Remember a host key accepted on first use, so later connects in this process must match it."""
        with self._lock:
            self._learned.setdefault(key, line)

    def close(self) -> None:
        """Close every transport (runs using them fail with connection_lost)."""
        with self._lock:
            conns = [c for group in self._conns.values() for c in group]
            self._conns.clear()
        for c in conns:
            c.transport.close()

    def _acquire(self, key: Hashable, connect: Callable[[], paramiko.Transport], limit: int) -> PooledTransport:
        while True:
            stale: list[PooledTransport] = []
            try:
                with self._lock:
                    self._sweep(stale)
                    conn = self._take_slot(key, stale, limit)
                    if conn is not None:
                        return conn
                    pending = self._pending.get(key)
                    mine = pending is None
                    if pending is None:
                        pending = self._pending[key] = _Pending()
            finally:
                for c in stale:
                    c.transport.close()
            if not mine:
                pending.done.wait()
                if pending.error is not None:
                    e = pending.error  # the same failure: a fresh instance per waiting thread
                    raise DriverError(e.code, e.message, before_start=e.before_start)
                continue
            return self._connect(key, connect, pending)

    def _sweep(self, stale: list[PooledTransport]) -> None:
        # Holding the lock. Now and then, also drop idle or dead transports of devices that are
        # no longer used (otherwise keepalives would hold them open forever).
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.idle_timeout, 60.0)
        for key in list(self._conns):
            self._prune(key, now, stale)
            if not self._conns[key]:
                del self._conns[key]

    def _prune(self, key: Hashable, now: float, stale: list[PooledTransport]) -> list[PooledTransport]:
        # Holding the lock: move dead and long-idle transports of `key` to `stale`.
        keep: list[PooledTransport] = []
        for c in self._conns.get(key, []):
            idle_too_long = c.channels == 0 and now - c.idle_since > self.idle_timeout
            (stale if idle_too_long or not c.transport.is_active() else keep).append(c)
        self._conns[key] = keep
        return keep

    def _take_slot(self, key: Hashable, stale: list[PooledTransport], limit: int) -> PooledTransport | None:
        # Holding the lock. First fit packs runs onto few transports so spare ones go idle and close.
        keep = self._prune(key, time.monotonic(), stale)
        for c in keep:
            if c.channels < limit and not c.full:
                c.channels += 1
                return c
        return None

    def _connect(self, key: Hashable, connect: Callable[[], paramiko.Transport],
                 pending: _Pending) -> PooledTransport:
        try:
            conn = PooledTransport(connect())
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            if isinstance(exc, DriverError):
                pending.error = exc
            pending.done.set()
            raise
        conn.channels = 1
        with self._lock:
            self._conns.setdefault(key, []).append(conn)
            del self._pending[key]
        pending.done.set()
        return conn

    def _drop(self, key: Hashable, conn: PooledTransport) -> None:
        with self._lock:
            conns = self._conns.get(key, [])
            if conn in conns:
                conns.remove(conn)
        conn.transport.close()


_pool: TransportPool | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def get_pool() -> TransportPool:
    """The process-wide pool, created on first use (and anew in a forked child)."""
    global _pool, _pool_pid
    with _pool_lock:
        # A forked child (Celery prefork) must not touch the parent's transports: their reader
        # threads do not exist here and the sockets are shared with the parent.
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = TransportPool(), os.getpid()
        return _pool


def reset_pool(max_channels: int = 8, idle_timeout: float = 300.0) -> TransportPool:
    """Close the process-wide pool's transports and start a new pool with these settings."""
    global _pool, _pool_pid
    with _pool_lock:
        old = _pool if _pool_pid == os.getpid() else None
        _pool, _pool_pid = TransportPool(max_channels, idle_timeout), os.getpid()
    if old is not None:
        old.close()
    return _pool
