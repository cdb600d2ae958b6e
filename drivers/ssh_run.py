"""One ssh run on its own channel: the shared run loop's primitives over paramiko.

The wrapper (ssh_script.py) prints "<tag> start <pgid>" before it execs the command: what comes
before that line (shell rc noise) is dropped, the pgid is reported to the loop, the rest is output.
"""
from __future__ import annotations

import logging
import select
import threading
from typing import TYPE_CHECKING

import paramiko

from ._common import utcnow
from ._runner import CANCELED, Pacing, Runner
from .base import (
    CONNECTION_LOST,
    CWD_NOT_FOUND,
    REMOTE_SETUP_FAILED,
    DriverError,
    ExecRequest,
    ExecResult,
    OutputCallback,
    StartCallback,
)
from .ssh_pool import PooledTransport

if TYPE_CHECKING:
    from .ssh import SSHDriver

log = logging.getLogger("agentruns.drivers.ssh")

_TICK = 0.05  # how often cancel and the deadline are checked while output flows ...
_IDLE_TICK = 0.2  # ... and once a run printed nothing for _QUIET_AFTER: hundreds of long, silent runs
_QUIET_AFTER = 1.0  # in one worker cost a core at 20 wake-ups a second each (cancel stays well under 2 s)
_KILL_SLACK = 5.0  # after the kill's grace, how long to wait for the channel to close


class SSHRun(Runner):
    """One run on its own channel: the wrapper's protocol line, the channel's output, the exit status."""

    pacing = Pacing(tick=_TICK, idle_tick=_IDLE_TICK, quiet_after=_QUIET_AFTER, escape_slack=_KILL_SLACK)

    def __init__(self, driver: SSHDriver, req: ExecRequest, command: str, head: bytes, tag: bytes,
                 on_output: OutputCallback | None, on_start: StartCallback | None):
        super().__init__(req, on_output, on_start)
        self.driver, self.command, self.head, self.tag = driver, command, head, tag
        self.conn: PooledTransport | None = None
        self.chan: paramiko.Channel | None = None
        self.poller = select.poll()  # not select(): a busy worker has more than 1024 descriptors
        self.pre = bytearray()  # stdout before the protocol line (shell rc noise), dropped
        self.cwd_missing = False
        self.env_sent = False

    def start(self, cancel: threading.Event | None) -> ExecResult | None:
        """Open a channel and exec the wrapper, which then waits for its env on stdin."""
        opened = self.driver.open_channel(self.command, cancel)
        if opened is None:  # canceled while connecting: nothing ran
            return ExecResult(exit_code=None, stdout=b"", stderr=b"", killed=CANCELED, finished_at=utcnow())
        self.conn, self.chan = opened
        return None

    def attach(self) -> None:
        """Send the env script and stdin (inline when it fits the peer's window) and watch the channel."""
        chan = self._channel()
        if len(self.head) + len(self.req.stdin) <= chan.out_window_size:
            self._write()  # fits the peer's window: sendall cannot block, so no thread for it
        else:
            threading.Thread(target=self._write, daemon=True, name="ssh-stdin").start()
        self.poller.register(chan.fileno(), select.POLLIN)

    def read(self) -> bool:
        """Take a bounded amount of what is there: endless output (`yes`) must not starve the loop."""
        return self._drain(32)

    def wait(self, timeout: float) -> None:
        """Wait for output, or for the exit status once the output has ended."""
        chan = self._channel()
        if chan.eof_received:
            chan.status_event.wait(timeout)  # select() would spin: the pipe stays readable after EOF
        else:
            self.poller.poll(timeout * 1000)

    def ended(self) -> bool:
        """True once the channel closed or brought EOF and a status (then read the rest), or cwd is missing."""
        chan = self._channel()
        if chan.closed or (chan.eof_received and chan.status_event.is_set()):
            self._drain(None)  # nothing more can come: unbounded is safe now
            return True
        return self.cwd_missing

    def stop_group(self, pgid: int, grace: float) -> None:
        """Kill the group from a second channel: the device runs TERM, grace, KILL itself (kill_command)."""
        try:
            self.driver.kill_group(pgid, grace)
        except Exception:  # noqa: BLE001 - the run loop still closes the channel
            log.exception("ssh %s: killing process group %s failed", self.driver.spec.id, pgid)

    def exit_code(self, killed: str | None) -> int | None:
        """The remote status; raise for a missing cwd, a lost connection or a shell that never started us."""
        chan, spec = self._channel(), self.driver.spec
        status = None if chan.exit_status == -1 else chan.exit_status
        if self.cwd_missing:
            raise DriverError(CWD_NOT_FOUND, f"working directory {self.req.cwd!r} does not exist on "
                              f"{spec.host}", before_start=True)
        # A normal end, even a death by signal, brings an exit status or an EOF before the close;
        # a dropped transport closes the channel without either.
        if killed is None and status is None and not chan.eof_received:
            self._lost()
        if self.pgid is None and killed is None:
            stderr = self.sink.stderr.getvalue()[-500:].decode(errors="replace").strip()
            raise DriverError(REMOTE_SETUP_FAILED, f"the shell on {spec.host} exited with {status} before "
                              f"starting the command: {stderr or '(no output)'}", before_start=True)
        return status

    def close(self) -> None:
        """Close the channel and give its slot back to the pool."""
        self._channel().close()
        assert self.conn is not None
        self.driver.pool.release(self.conn)

    def _channel(self) -> paramiko.Channel:
        assert self.chan is not None, "start() opens the channel first"
        return self.chan

    def _write(self) -> None:
        chan = self._channel()
        try:
            chan.sendall(self.head)
            self.env_sent = True
            if self.req.stdin:
                chan.sendall(self.req.stdin)
            chan.shutdown_write()  # several agent CLIs wait for EOF on stdin
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited or the connection dropped; the reader reports which

    def _drain(self, limit: int | None) -> bool:
        """Read what is there, at most `limit` rounds (None: all of it); True if anything was."""
        chan, got = self._channel(), False
        while (chan.recv_ready() or chan.recv_stderr_ready()) and (limit is None or limit > 0):
            limit, got = None if limit is None else limit - 1, True
            if chan.recv_ready():
                self._stdout(chan.recv(65536))
            if chan.recv_stderr_ready():
                self.sink.feed("stderr", chan.recv_stderr(65536))
        return got

    def _stdout(self, data: bytes) -> None:
        if self.pgid is not None:
            self.sink.feed("stdout", data)
            return
        if self.cwd_missing:
            return
        self.pre += data
        at = self.pre.find(self.tag + b" ")
        end = self.pre.find(b"\n", at) if at >= 0 else -1
        if end < 0:
            if at < 0 and len(self.pre) > 65536:
                del self.pre[: len(self.pre) - len(self.tag)]  # noise only; keep a possible partial tag
            return
        word = bytes(self.pre[at + len(self.tag) + 1:end]).split()
        rest = bytes(self.pre[end + 1:])
        self.pre.clear()
        if word[:1] == [b"cwd_not_found"]:
            self.cwd_missing = True
            return
        self.started(int(word[1]))
        self.sink.feed("stdout", rest)

    def _lost(self) -> None:
        spec = self.driver.spec
        if self.pgid is not None:
            # Without a pty the command outlives the connection: try once to stop it.
            try:
                self.driver.kill_group(self.pgid, self.req.kill_grace, retry=False)
            except DriverError as exc:
                log.warning("ssh %s: could not kill pgid %s after losing the connection: %s",
                            spec.id, self.pgid, exc.message)
        raise DriverError(CONNECTION_LOST, f"connection to {spec.host}:{spec.port} was lost during the run",
                          before_start=not self.env_sent and self.pgid is None, pgid=self.pgid)
