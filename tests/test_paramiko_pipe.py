"""drivers.paramiko_pipe: a channel's wake-up pipe is never written after its close (paramiko #692)."""
from __future__ import annotations

import os
import threading

from paramiko import pipe as paramiko_pipe

from drivers import paramiko_pipe as locked


class _SlowWrite:
    """os, but write() waits to be released: holds a set() between its check and its write."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def write(self, fd: int, data: bytes) -> int:
        self.entered.set()
        self.release.wait(5)
        return os.write(fd, data)

    def __getattr__(self, name: str):
        return getattr(os, name)


def test_the_ssh_driver_makes_paramiko_use_the_locked_pipes():
    import drivers.ssh_run  # noqa: F401 - importing the driver installs them

    assert paramiko_pipe.make_pipe is locked.LockedPipe
    assert isinstance(paramiko_pipe.make_or_pipe(paramiko_pipe.make_pipe())[0], locked.LockedOrPipe)


def test_a_close_waits_for_a_wake_up_being_written(monkeypatch):
    """The transport thread's set() checked `closed` and is about to write: the channel's close must
    wait, or the byte goes to the descriptor number after the close, by then perhaps another
    connection's socket."""
    locked.install()
    slow = _SlowWrite()
    monkeypatch.setattr(paramiko_pipe, "os", slow)
    monkeypatch.setattr(locked, "os", slow)
    pipe = paramiko_pipe.make_pipe()  # what a channel's fileno() creates
    setter = threading.Thread(target=pipe.set, daemon=True)
    setter.start()
    assert slow.entered.wait(5)
    closer = threading.Thread(target=pipe.close, daemon=True)
    closer.start()
    closer.join(0.3)
    waited = closer.is_alive()
    slow.release.set()
    setter.join(5)
    closer.join(5)
    assert waited, "the close went ahead while a write into the pipe was in progress"
    pipe.set()  # after the close: nothing is written, nothing raised
    pipe.clear()
    pipe.close()
