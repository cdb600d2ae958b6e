"""Stopping process groups on a device in batches: one exec for all the stops asked for at once.

A run's timeout or cancel stops its process group from a second channel (ssh_script.kill_command).
With one exec per stop, a thousand runs canceled together needed a thousand sessions at once: more
than the pooled connections have room for, so the pool opened new connections for them, and the
handshakes took the worker's CPU (bench/results/2026-11-29T1248Z-run_all.txt: 3 of 1,000 runs
stopped within a minute). Here the first stop of a device runs at once; the stops asked for while it
runs wait for it and then go together in the next exec, so a device has at most one kill exec at a
time and the stops it covers come back in about the time of one.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

# Runs the kill script on the device; returns the groups it found, raises DriverError on failure.
KillExec = Callable[[list[int], float], set[int]]


class _Stop:
    __slots__ = ("pgid", "done", "found", "error")

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.done = threading.Event()
        self.found = False
        self.error: BaseException | None = None


class _Device:
    __slots__ = ("waiting", "busy")

    def __init__(self) -> None:
        self.waiting: list[_Stop] = []
        self.busy = False


class KillBatcher:
    """Per process: the stops waiting to be sent, per device and grace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[Hashable, _Device] = {}

    def kill(self, device: Hashable, pgid: int, grace: float, run: KillExec) -> bool:
        """Stop `pgid` on `device` (TERM, up to `grace`, KILL) with whatever stops come with it;
        True if the group was found. Raises what the exec raised."""
        stop, key = _Stop(pgid), (device, grace)
        with self._lock:
            entry = self._devices.setdefault(key, _Device())
            entry.waiting.append(stop)
            lead = not entry.busy
            entry.busy = True
        if lead:  # a thread of its own sends batches until none is waiting: each caller waits for its own
            threading.Thread(target=self._send, args=(key, grace, run), daemon=True, name="ssh-kill").start()
        stop.done.wait()
        if stop.error is not None:
            raise stop.error
        return stop.found

    def _send(self, key: tuple, grace: float, run: KillExec) -> None:
        while True:
            with self._lock:
                entry = self._devices[key]
                batch, entry.waiting = entry.waiting, []
                if not batch:
                    entry.busy = False
                    del self._devices[key]
                    return
            try:
                found = run(sorted({s.pgid for s in batch}), grace)
            except BaseException as exc:  # noqa: BLE001 - each caller gets it (and is never left waiting)
                for s in batch:
                    s.error = exc
                    s.done.set()
                continue
            for s in batch:
                s.found = s.pgid in found
                s.done.set()


_batcher = KillBatcher()


def get_batcher() -> KillBatcher:
    """The process-wide batcher."""
    return _batcher
