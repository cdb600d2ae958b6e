"""paramiko's channel pipes, with the locks upstream never merged (paramiko issues #692, #1700, #2271).

A channel's fileno() (ssh_run.py polls it) is the read end of an os.pipe into which paramiko's
transport thread writes a byte when data arrives (PosixPipe.set). Closing the channel closes both
ends from the caller's thread, while set() checks `_closed` and then writes, with no lock between
them. When a close falls in between, the byte goes to a descriptor number the process may already
have handed to a new socket, as often as not another SSH connection's: its stream is corrupted and
that transport dies ("Bad file descriptor", "Broken pipe"), with every run on it. With hundreds of
runs per worker opening and closing channels, the window is hit. The two halves that stdout and
stderr share (OrPipe) also race each other, which can lose a wake-up.

install() makes paramiko create these locked pipes instead (POSIX only; idempotent).
"""
from __future__ import annotations

import os
import sys
import threading

from paramiko import pipe as _pipe


class LockedPipe(_pipe.PosixPipe):
    """PosixPipe whose close, set and clear exclude each other: no read or write after the close."""

    _rfd: int
    _wfd: int
    _set: bool
    _forever: bool
    _closed: bool

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._rfd)
            os.close(self._wfd)

    def clear(self) -> None:
        with self._lock:
            if not self._set or self._forever or self._closed:
                return
            os.read(self._rfd, 1)
            self._set = False

    def set(self) -> None:
        with self._lock:
            if self._set or self._closed:
                return
            self._set = True
            os.write(self._wfd, b"*")

    def set_forever(self) -> None:
        with self._lock:
            self._forever = True
        self.set()


class LockedOrPipe(_pipe.OrPipe):
    """One of the two halves of a pipe (stdout, stderr), updated under a lock the halves share."""

    def __init__(self, pipe, lock: threading.Lock) -> None:
        super().__init__(pipe)
        self._lock = lock

    def set(self) -> None:
        with self._lock:
            super().set()

    def clear(self) -> None:
        with self._lock:
            super().clear()


def _make_or_pipe(pipe) -> tuple[LockedOrPipe, LockedOrPipe]:
    lock = threading.Lock()
    p1, p2 = LockedOrPipe(pipe, lock), LockedOrPipe(pipe, lock)
    p1._partner, p2._partner = p2, p1
    return p1, p2


def install() -> None:
    """Have paramiko's channels use the locked pipes from now on."""
    if sys.platform.startswith("win"):
        return
    _pipe.make_pipe = LockedPipe
    _pipe.make_or_pipe = _make_or_pipe
