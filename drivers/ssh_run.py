"""One ssh run: the shared run loop's primitives over paramiko, across as many channels as it takes.

The command runs detached on the device and spools its output (ssh_script.py, ssh_spool.py). The
first channel starts it and streams its output live; when a channel is lost (the connection dropped)
the run reconnects and re-attaches to the spool from the byte offsets it holds, until the device has
been unreachable for `device_lost` seconds. A run taken over from another worker (an AttachTicket)
starts with an attach. Each channel's streams are split into protocol lines and output by
ssh_protocol.ChannelStream.
"""
from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paramiko

from . import paramiko_pipe, ssh_protocol, ssh_script, ssh_spool
from ._common import OutputSink, utcnow
from ._runner import CANCELED, Pacing, Runner
from .base import (
    AUTH_FAILED,
    CONNECTION_LOST,
    CWD_NOT_FOUND,
    DEVICE_ADDRESS_REFUSED,
    DEVICE_LOST,
    HOST_KEY_MISMATCH,
    HOST_KEY_UNKNOWN,
    REMOTE_SETUP_FAILED,
    SPOOL_GONE,
    AttachTicket,
    DriverError,
    ExecRequest,
    ExecResult,
    OutputCallback,
    StartCallback,
)
from .ssh_pool import PooledTransport, close_quietly

if TYPE_CHECKING:
    from .ssh import SSHDriver

log = logging.getLogger("agentruns.drivers.ssh")
# A run polls its channel's fileno(): paramiko's pipe behind it must not race the channel's close.
paramiko_pipe.install()

_TICK = 0.05  # how often cancel and the deadline are checked while output flows ...
_IDLE_TICK = 0.2  # ... and once a run printed nothing for _QUIET_AFTER: hundreds of long, silent runs
_QUIET_AFTER = 1.0  # in one worker cost a core at 20 wake-ups a second each (cancel stays well under 2 s)
_KILL_SLACK = 5.0  # after the kill's grace, how long to wait for the channel to close
_FATAL = {AUTH_FAILED, HOST_KEY_MISMATCH, HOST_KEY_UNKNOWN, DEVICE_ADDRESS_REFUSED}  # reconnecting cannot cure these


class _Channel:
    """One channel of the run: its command (a start or an attach) and its two parsed streams."""

    def __init__(self, conn: PooledTransport, chan: paramiko.Channel, tag: bytes, attach: bool):
        self.conn, self.chan, self.attach = conn, chan, attach
        self.stdout = ssh_protocol.ChannelStream(tag, verdict=attach)
        self.stderr = ssh_protocol.ChannelStream(tag, verdict=False)

    def finished(self) -> bool:
        """Closed, or EOF and an exit status: nothing more will come on it."""
        return self.chan.closed or (self.chan.eof_received and self.chan.status_event.is_set())

    def lost(self) -> bool:
        """Finished without EOF or an exit status: the connection dropped (a normal end, even a death by
        signal, brings EOF before the close; paramiko also sets status_event on any close)."""
        return self.chan.exit_status == -1 and not self.chan.eof_received


class SSHRun(Runner):
    """One run of one command, on a device reached over ssh, from its start (or a re-attach) to its end."""

    pacing = Pacing(tick=_TICK, idle_tick=_IDLE_TICK, quiet_after=_QUIET_AFTER, escape_slack=_KILL_SLACK)

    def __init__(self, driver: SSHDriver, req: ExecRequest, command: str | Callable[..., str], head: bytes, nonce: str,
                 on_output: OutputCallback | None, on_start: StartCallback | None,
                 ticket: AttachTicket | None = None):
        super().__init__(req, on_output, on_start)
        if ticket is not None:
            self.sink = OutputSink(req.output_cap, on_output,
                                   {"stdout": ticket.emitted_stdout, "stderr": ticket.emitted_stderr})
        self.driver, self.command, self.head, self.nonce, self.ticket = driver, command, head, nonce, ticket
        self.key = req.spool_key or nonce
        self.channel: _Channel | None = None
        self.poller = select.poll()  # not select(): a busy worker has more than 1024 descriptors
        self.refused: list[bytes] | None = None  # the start's protocol line when it did not start
        self.noise = b""  # what the device's shell said before giving up
        self.status: int | None = None  # the waiter's exit status, once known
        self.over = False  # the command ended and all its output is in
        self.lost_since: float | None = None
        self.next_try = 0.0
        self.tries = 0

    # --- the run loop's primitives -----------------------------------------------------------------

    def start(self, cancel: threading.Event | None) -> ExecResult | None:
        """Open a channel and exec the wrapper (which then waits for its env on stdin), or re-attach."""
        if self.ticket is not None:
            self.resumed(self.ticket.pgid, self.ticket.started_at)
            self.lost_since = time.monotonic()  # as if the connection had just dropped
            while self.channel is None:
                if cancel is not None and cancel.is_set():  # the tree is stopped later, with the spool
                    return ExecResult(exit_code=None, stdout=b"", stderr=b"", killed=CANCELED,
                                      pgid=self.pgid, started_at=self.started_at, finished_at=utcnow())
                if not self._reconnect():
                    time.sleep(max(0.0, self.next_try - time.monotonic()))
            return None
        opened = self.driver.open_channel(self.command, cancel)
        if opened is None:  # canceled while connecting: nothing ran
            return ExecResult(exit_code=None, stdout=b"", stderr=b"", killed=CANCELED, finished_at=utcnow())
        self.channel = _Channel(*opened, tag=ssh_script.tag(self.nonce).encode(), attach=False)
        return None

    def attach(self) -> None:
        """Send the env script and stdin (inline when it fits the peer's window) and watch the channel."""
        channel = self._current()
        if channel.attach:
            return  # _reconnect() opened and watches it; an attach sends nothing
        if len(self.head) <= channel.chan.out_window_size:
            self._write(channel.chan)  # fits the peer's window: sendall cannot block, so no thread for it
        else:
            threading.Thread(target=self._write, args=(channel.chan,), daemon=True, name="ssh-stdin").start()
        self._watch(channel)

    def read(self) -> bool:
        """Take a bounded amount of what is there: endless output (`yes`) must not starve the loop."""
        return self.channel is not None and self._drain(self.channel, 32)

    def wait(self, timeout: float) -> None:
        """Wait for output, for the exit status once the output has ended, or for the next reconnect."""
        channel = self.channel
        if channel is None:
            time.sleep(min(timeout, max(0.0, self.next_try - time.monotonic())))
        elif channel.chan.eof_received:
            channel.chan.status_event.wait(timeout)  # poll() would spin: the pipe stays readable after EOF
        else:
            self.poller.poll(timeout * 1000)

    def ended(self) -> bool:
        """True once all output is in and the command is over (or never started); reconnects meanwhile."""
        if self.over or self.refused is not None:
            return True
        channel = self.channel
        if channel is not None and channel.finished():
            self._drain(channel, None)  # nothing more can come: unbounded is safe now
            self._close_channel()
            self._settle(channel)
            if self.over or self.refused is not None:
                return True
        if self.channel is None and time.monotonic() >= self.next_try:
            self._reconnect()
        return False

    def stop_group(self, pgid: int, grace: float) -> None:
        """Kill the group from a second channel: the device runs TERM, grace, KILL itself (kill_command,
        batched with the device's other stops: ssh_kill.py)."""
        try:
            self.driver.kill_group(pgid, grace)
        except Exception:  # noqa: BLE001 - the run loop still closes the channel
            log.exception("ssh %s: killing process group %s failed", self.driver.spec.id, pgid)

    def exit_code(self, killed: str | None) -> int | None:
        """The command's exit code; raise for a command that never started or a device given up on."""
        spec = self.driver.spec
        if self.refused is not None:
            word = self.refused[0].decode(errors="replace") if self.refused else ""
            if word == "cwd_not_found":
                raise DriverError(CWD_NOT_FOUND, f"working directory {self.req.cwd!r} does not exist on "
                                  f"{spec.host}", before_start=True)
            if word == "gone":
                if self.pgid is None:
                    raise DriverError(CONNECTION_LOST, f"connection to {spec.host}:{spec.port} was lost before "
                                      "the command started; it did not start", before_start=True)
                raise DriverError(SPOOL_GONE, f"the run's spool on {spec.host} is gone (swept, or the device "
                                  "was reset); its result cannot be read", before_start=False, pgid=self.pgid)
            if word == "spool_exists":
                raise DriverError(REMOTE_SETUP_FAILED, f"the run's spool already exists on {spec.host}: it was "
                                  "started before, and is not started again", before_start=False)
            noise = self.noise.decode(errors="replace").strip()
            raise DriverError(REMOTE_SETUP_FAILED, f"the shell on {spec.host} exited with {self.status} before "
                              f"starting the command: {noise or word or '(no output)'}", before_start=True)
        if killed is not None:
            return None  # stopped by us (or left running: detached)
        return ssh_protocol.exit_code(self.status)

    def close(self) -> None:
        """Close the channel and give its slot back to the pool."""
        self._close_channel()

    # --- channels -----------------------------------------------------------------------------------

    def _current(self) -> _Channel:
        assert self.channel is not None, "start() opens the channel first"
        return self.channel

    def _watch(self, channel: _Channel) -> None:
        self.poller.register(channel.chan.fileno(), select.POLLIN)

    def _close_channel(self) -> None:
        channel, self.channel = self.channel, None
        if channel is None:
            return
        try:
            self.poller.unregister(channel.chan.fileno())
        except (KeyError, ValueError, OSError):
            pass
        try:
            close_quietly(channel.chan)
        finally:
            self.driver.pool.release(channel.conn)

    def _write(self, chan: paramiko.Channel) -> None:
        try:
            chan.sendall(self.head)  # the env script and stdin (ssh_script.stdin_payload)
            chan.shutdown_write()  # the wrapper spools stdin until EOF
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited or the connection dropped; the reader reports which

    def _drain(self, channel: _Channel, limit: int | None) -> bool:
        """Read what is there, at most `limit` rounds (None: all of it); True if anything was."""
        chan, got = channel.chan, False
        while (chan.recv_ready() or chan.recv_stderr_ready()) and (limit is None or limit > 0):
            limit, got = None if limit is None else limit - 1, True
            if chan.recv_ready():
                self._take(channel, "stdout", chan.recv(65536))
            if chan.recv_stderr_ready():
                self._take(channel, "stderr", chan.recv_stderr(65536))
        return got

    def _take(self, channel: _Channel, stream: str, data: bytes) -> None:
        parser = channel.stdout if stream == "stdout" else channel.stderr
        had_line = parser.line is not None
        output = parser.feed(data)
        if stream == "stdout" and not had_line and parser.line is not None:
            self._on_line(channel, parser.line)
        if output and self.refused is None:
            self.sink.feed(stream, output)

    def _on_line(self, channel: _Channel, words: list[bytes]) -> None:
        """The wrapper's (or the attach's) protocol line: started, attached, or why not."""
        word = words[0] if words else b""
        if word in (b"start", b"attached") and len(words) > 1 and words[1].isdigit():
            pgid = int(words[1])
            if self.pgid is None:
                self.started(pgid)  # a start, or an attach that found the start we lost the line of
            elif pgid != self.pgid:
                log.warning("ssh %s: spool %s reports process group %s, expected %s", self.driver.spec.id,
                            self.key, pgid, self.pgid)
            self.lost_since, self.tries = None, 0
        else:
            self.refused = words

    def _settle(self, channel: _Channel) -> None:
        """A channel finished: the command is over, or the run must attach (again)."""
        verdict = None
        for stream, parser in (("stdout", channel.stdout), ("stderr", channel.stderr)):
            rest, words = parser.finish()
            if rest and self.refused is None and parser.line is not None:
                self.sink.feed(stream, rest)
            verdict = words if stream == "stdout" else verdict
        if self.refused is not None:
            return
        if verdict is not None and verdict[0] == b"end":
            self.status, self.over = ssh_protocol.parse_status(verdict[1] if len(verdict) > 1 else None), True
        elif verdict is not None:  # "more": the run ended while the attach followed it; read the rest now
            self.next_try = 0.0
        elif channel.lost() or channel.attach:
            if self.lost_since is None:
                self.lost_since = time.monotonic()
                log.info("ssh %s: run %s lost its channel; re-attaching", self.driver.spec.id, self.key)
        else:
            status = channel.chan.exit_status
            self.status = None if status == -1 else status
            if channel.stdout.line is not None:
                self.over = True
            else:  # the shell exited before the wrapper's protocol line (nologin, a broken rc file)
                self.refused = []
                self.noise = channel.stderr.pending_noise() or channel.stdout.pending_noise()

    def _reconnect(self) -> bool:
        """One attempt to re-attach from the offsets held; False when it failed (the next one is scheduled)."""
        now = time.monotonic()
        if self.lost_since is None:  # an attach that said "more" (not a loss) may find the device gone
            self.lost_since = now
        lost_for = now - self.lost_since
        command = ssh_spool.attach_command(self.key, ssh_script.tag(self.nonce),
                                           self.sink.position("stdout"), self.sink.position("stderr"))
        try:
            opened = self.driver.open_channel(command, retry=False)
        except DriverError as exc:
            if exc.code in _FATAL:
                raise
            if lost_for >= self.driver.device_lost_seconds:
                spec = self.driver.spec
                raise DriverError(DEVICE_LOST, f"{spec.host}:{spec.port} stayed unreachable for "
                                  f"{lost_for:.0f} s during the run ({exc.message})", before_start=False,
                                  pgid=self.pgid) from None
            delays = self.driver.retry_delays or (1.0,)
            self.next_try = now + delays[min(self.tries, len(delays) - 1)]
            self.tries += 1
            return False
        assert opened is not None
        self.channel = _Channel(*opened, tag=ssh_script.tag(self.nonce).encode(), attach=True)
        opened[1].shutdown_write()
        self._watch(self.channel)
        return True
