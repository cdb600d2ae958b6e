"""Removing the spools of finished runs from their devices, off the runs' paths and in batches.

A worker hands over a spool once the run's result is recorded (SSHDriver.discard). One exec per
device removes every spool handed over in the FLUSH_DELAY before it (and while it runs, the next
runs' spools pile up for the one after), so a busy device pays one session and one `rm` for many
runs: with one exec per run, removing spools cost a no-op run's device a tenth more CPU.
A removal that fails (the device is unreachable) is tried again after RETRY_DELAYS, then its spools
wait for the next run on that device to finish. Now and then (SWEEP_EVERY) a removal also sweeps the spools nobody
came back for (ssh_spool.cleanup_command).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

from . import ssh_spool

log = logging.getLogger("agentruns.drivers.ssh")

SWEEP_EVERY = 3600.0  # seconds between sweeps of stale spools, per device and worker process
FLUSH_DELAY = 2.0  # a removal waits this long for more spools of its device to remove at once
RETRY_DELAYS = (5.0, 30.0)  # after a failed removal, before the next tries

Exec = Callable[[str], object]  # runs one short command on the device, raising DriverError on failure


class _Device:
    __slots__ = ("keys", "stop", "busy", "last_sweep")

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.stop: set[str] = set()  # spools whose command may still run: stop it before removing
        self.busy = False
        self.last_sweep = float("-inf")


class Janitor:
    """Per process: the spools waiting for removal, per device."""

    def __init__(self, delay: float = FLUSH_DELAY, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.delay, self.retry_delays = delay, retry_delays
        self._lock = threading.Lock()
        self._devices: dict[Hashable, _Device] = {}

    def discard(self, device: Hashable, key: str, run: Exec, *, stop: bool = False) -> threading.Thread | None:
        """Queue key's spool for removal on `device` (with stop: kill what still runs there first).

        Returns the thread that removes it now, or None when a removal in progress will take it.
        """
        ssh_spool.check_key(key)
        with self._lock:
            entry = self._devices.setdefault(device, _Device())
            entry.keys.add(key)
            if stop:
                entry.stop.add(key)
            if entry.busy:
                return None
            entry.busy = True
        thread = threading.Thread(target=self._flush, args=(device, run), daemon=True, name="ssh-janitor")
        thread.start()
        return thread

    def pending(self, device: Hashable) -> set[str]:
        """Keys still waiting for removal on `device` (for tests and logs)."""
        with self._lock:
            entry = self._devices.get(device)
            return set(entry.keys) if entry else set()

    def _flush(self, device: Hashable, run: Exec) -> None:
        failures = 0
        while True:
            time.sleep(self.delay if not failures else self.retry_delays[failures - 1])
            with self._lock:
                entry = self._devices[device]
                keys, stop = sorted(entry.keys), sorted(entry.stop)
                sweep = time.monotonic() - entry.last_sweep >= SWEEP_EVERY
                if not keys:
                    entry.busy = False
                    return
                entry.keys.clear()
                entry.stop.clear()
            try:
                run(ssh_spool.cleanup_command(keys, stop=stop, sweep=sweep))
                failures = 0
            except Exception as exc:  # noqa: BLE001 - best effort: the spools are swept some day anyway
                failures += 1
                gave_up = failures > len(self.retry_delays)
                log.info("spool removal on %s failed (%s)%s", device, exc,
                         ": kept for the next run there" if gave_up else ": will try again")
                with self._lock:
                    entry.keys.update(keys)
                    entry.stop.update(stop)
                    if gave_up:
                        entry.busy = False
                        return
                continue
            if sweep:
                with self._lock:
                    entry.last_sweep = time.monotonic()


_janitor = Janitor()


def get_janitor() -> Janitor:
    """The process-wide janitor."""
    return _janitor
