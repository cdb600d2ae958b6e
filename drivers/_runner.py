"""The one run loop both drivers share, after invoke's Runner: a transport subclass supplies primitives.

The loop owns everything about *when*: the deadline, cancel, stopping the process group (TERM, the
grace, KILL), giving up on output held open by a process that left the group, draining output into
the one OutputSink, and building the one ExecResult. A subclass supplies only the *how* of its
transport:

- start: launch the command (it may wait for its stdin) or say why it never ran;
- attach: feed stdin and connect the output (kept apart from start so a command that runs detached
  can later be re-attached after a dropped connection without being started again; the ssh driver
  does that, see ssh_run.py);
- read / wait / ended: take the output that is there, wait for more, tell when all of it is in;
- stop_group: TERM, grace, KILL for the group (`escalate` is that sequence for a transport that can
  signal cheaply; the ssh driver runs its twin on the device, in one command);
- exit_code / close.
"""
from __future__ import annotations

import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from ._common import OutputSink, call_on_start, utcnow
from .base import DETACHED, ExecRequest, ExecResult, OutputCallback, StartCallback

CANCELED = "canceled"
TIMEOUT = "timeout"
__all__ = ["CANCELED", "DETACHED", "TIMEOUT", "Pacing", "Runner", "escalate"]


@dataclass(frozen=True)
class Pacing:
    """How often a run checks cancel and its deadline, and how long a stopped run's output is awaited."""

    tick: float = 0.05  # while output flows, and once a stop was asked for until it is sent ...
    idle_tick: float = 0.05  # ... and once the run printed nothing for quiet_after, or its stop is sent
    quiet_after: float = 1.0
    escape_slack: float = 3.0  # after the stop's grace: how long output held by an escaped process is awaited


class Runner(ABC):
    """One run of one command: the shared loop over the primitives a transport subclass implements."""

    pacing: ClassVar[Pacing] = Pacing()

    def __init__(self, req: ExecRequest, on_output: OutputCallback | None, on_start: StartCallback | None):
        self.req = req
        self.sink = OutputSink(req.output_cap, on_output)
        self.pgid: int | None = None
        self.started_at: datetime | None = None
        self._on_start = on_start

    def run(self, cancel: threading.Event | None, detach: threading.Event | None = None) -> ExecResult:
        """Run to completion, the request's timeout, or until `cancel` is set; stop the whole group then.

        Once `detach` is set the run returns at once (killed="detached") and stops nothing: only a
        transport whose command outlives it (ssh) is given one.
        """
        deadline = time.monotonic() + self.req.timeout  # time spent starting (connecting) counts
        early = self.start(cancel)
        if early is not None:
            return early
        try:
            self.attach()
            killed = self._supervise(deadline, cancel, detach)
            exit_code = self.exit_code(killed)
            sink = self.sink
            return ExecResult(
                exit_code=exit_code, stdout=sink.stdout.getvalue(), stderr=sink.stderr.getvalue(),
                stdout_truncated=sink.stdout.truncated, stderr_truncated=sink.stderr.truncated,
                killed=killed, pgid=self.pgid, started_at=self.started_at, finished_at=utcnow(),
            )
        finally:
            self.close()

    def started(self, pgid: int) -> None:
        """Called by the transport once the command runs and its process group id is known."""
        self.pgid, self.started_at = pgid, utcnow()
        call_on_start(self._on_start, pgid)

    def resumed(self, pgid: int, started_at: datetime | None) -> None:
        """Called by a transport re-attaching to a command started earlier: no new start to report."""
        self.pgid, self.started_at = pgid, started_at

    def _supervise(self, deadline: float, cancel: threading.Event | None,
                   detach: threading.Event | None = None) -> str | None:
        """Drain until the command ends, stopping its group on timeout or cancel; return `killed`."""
        pace, grace = self.pacing, self.req.kill_grace
        killed: str | None = None
        asked_at = 0.0
        stopper: threading.Thread | None = None
        stop_sent: float | None = None
        active_at = time.monotonic()
        while True:
            if detach is not None and detach.is_set() and stopper is None:
                return DETACHED  # someone else follows the command from here: stop nothing
            if self.read():
                active_at = time.monotonic()
            if self.ended():
                break
            now = time.monotonic()
            if killed is None and ((cancel is not None and cancel.is_set()) or now >= deadline):
                killed = CANCELED if cancel is not None and cancel.is_set() else TIMEOUT
                asked_at = now
            if killed and stopper is None:
                if self.pgid is not None:
                    stop_sent = now
                    stopper = threading.Thread(target=self.stop_group, args=(self.pgid, grace), daemon=True,
                                               name=f"{type(self).__name__}-stop")
                    stopper.start()
                elif now - asked_at > grace:
                    break  # the command never reported a pgid; closing is all we can do
            if stop_sent is not None and now - stop_sent > grace + pace.escape_slack:
                break  # a process that escaped the group still holds the output open
            # A long, silent run wakes less often: hundreds of them in one worker add up. So does a
            # run whose stop is on its way: wait() returns as soon as the command's output ends, and
            # a thousand runs canceled at once, polling at the tick, starved the worker's heartbeat.
            busy = (killed and stopper is None) or now - active_at < pace.quiet_after
            self.wait(pace.tick if busy else pace.idle_tick)
        if stopper is not None:
            # The output can end before the KILL (children that ignore TERM but left stdout);
            # a stopped run returns only once the whole group had its KILL.
            stopper.join(grace + pace.escape_slack)
        return killed

    @abstractmethod
    def start(self, cancel: threading.Event | None) -> ExecResult | None:
        """Launch the command; return None once it is launched, or the result of a command that never ran."""

    @abstractmethod
    def attach(self) -> None:
        """Feed the command its stdin and connect its output (start or read calls started() with the pgid)."""

    @abstractmethod
    def read(self) -> bool:
        """Feed the output that is there into self.sink without blocking for long; True if any came."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Block up to `timeout` seconds, returning early when there is output or the command ended."""

    @abstractmethod
    def ended(self) -> bool:
        """True once nothing more will come: the command is over and its output fully read."""

    @abstractmethod
    def stop_group(self, pgid: int, grace: float) -> None:
        """TERM the group, KILL it after `grace`; runs in a thread beside the loop, so it must not raise."""

    @abstractmethod
    def exit_code(self, killed: str | None) -> int | None:
        """The command's exit status (None for a death by signal), or raise the DriverError that explains it."""

    @abstractmethod
    def close(self) -> None:
        """Release what the run holds on its transport, once the result (or the error) is known."""


def escalate(signal_group: Callable[[int], bool], wait_gone: Callable[[float], object], grace: float) -> bool:
    """TERM the group, let wait_gone(kill_at) return once it is gone or `grace` is up, then KILL it.

    False, and nothing more sent, when the TERM found no group. The KILL follows every TERM that
    landed: it ends members that ignored the TERM, and costs nothing when the group is gone.
    """
    kill_at = time.monotonic() + grace
    if not signal_group(signal.SIGTERM):
        return False
    wait_gone(kill_at)
    signal_group(signal.SIGKILL)
    return True
