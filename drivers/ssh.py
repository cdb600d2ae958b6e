"""Run commands on a device over SSH (paramiko): one pooled transport, one channel per run.

See ssh_script.py for the remote wrapper (pgid line, cwd check, env on stdin, login shell),
ssh_pool.py for connection reuse and ssh_connect.py for host key pinning and auth.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import select
import threading
import time

import paramiko

from . import ssh_script
from ._common import OutputSink, call_on_start, utcnow
from .base import (
    AUTH_FAILED, CONNECTION_LOST, CWD_NOT_FOUND, HOST_KEY_MISMATCH, HOST_KEY_UNKNOWN, REMOTE_SETUP_FAILED,
    DeviceSpec, DriverError, ExecRequest, ExecResult, OutputCallback, StartCallback,
)
from .ssh_connect import HostKeyCallback, connect
from .ssh_pool import TransportPool, get_pool

log = logging.getLogger("agentruns.drivers.ssh")

_TICK = 0.05  # how often cancel and the deadline are checked while output is quiet ...
_IDLE_TICK = 0.2  # ... and once a run printed nothing for _QUIET_AFTER: hundreds of long, silent runs
_QUIET_AFTER = 1.0  # in one worker cost a core at 20 wake-ups a second each (cancel stays well under 2 s)
_KILL_SLACK = 5.0  # after the kill's grace, how long to wait for the channel to close
_NOT_RETRIED = {AUTH_FAILED, HOST_KEY_MISMATCH, HOST_KEY_UNKNOWN}
_BACKSTOP_MARGIN = 30.0  # the remote `timeout` fires this long after ours, only if we are gone


class SSHDriver:
    """Runs argv on an SSH device. Thread-safe; cheap to create per run (transports are pooled).

    on_host_key: called with a known_hosts line when a key is accepted on first use
    (spec.trust_on_first_use and no spec.host_key); persist it as the device's host_key. Later
    connects in this process are held to that key even before the caller pins it.
    """

    def __init__(self, spec: DeviceSpec, on_host_key: HostKeyCallback | None = None, *,
                 pool: TransportPool | None = None, retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0),
                 kill_grace: float = 2.0, timeout_backstop: bool = True):
        self.spec = spec
        self.on_host_key = on_host_key
        self.retry_delays = retry_delays
        self.kill_grace = kill_grace  # for kill_group(); runs use req.kill_grace
        self.timeout_backstop = timeout_backstop
        self._pool = pool
        secret = f"{spec.private_key or ''}\0{spec.password or ''}".encode()
        # Secrets are part of the identity (a rotated key must not reuse the old connection) but
        # only as a digest.
        self._key = (spec.id, spec.host, spec.port, spec.username, spec.host_key,
                     spec.trust_on_first_use, hashlib.sha256(secret).hexdigest())

    @property
    def pool_key(self) -> tuple:
        """This device's key in the pool (no secrets in it, only a digest)."""
        return self._key

    @property
    def pool(self) -> TransportPool:
        """The pool this driver uses (the process-wide one unless given)."""
        return self._pool if self._pool is not None else get_pool()

    def run(self, req: ExecRequest, *, on_output: OutputCallback | None = None,
            on_start: StartCallback | None = None, cancel: threading.Event | None = None) -> ExecResult:
        """Run req to completion, a timeout, or until `cancel` is set; kill the whole group on stop."""
        nonce = secrets.token_hex(8)
        backstop = req.timeout + req.kill_grace + _BACKSTOP_MARGIN if self.timeout_backstop else None
        command = ssh_script.build_command(req.argv, req.cwd, nonce, login_shell=self.spec.login_shell,
                                           backstop=backstop, kill_grace=req.kill_grace)
        head = ssh_script.stdin_payload(req.env, b"")
        deadline = time.monotonic() + req.timeout
        opened = self._open(command, cancel)
        if opened is None:  # canceled while connecting: nothing ran
            return ExecResult(exit_code=None, stdout=b"", stderr=b"", killed="canceled", finished_at=utcnow())
        conn, chan = opened
        try:
            run = _Run(self, req, chan, ssh_script.tag(nonce).encode(), OutputSink(req.output_cap, on_output),
                       on_start)
            return run.drive(head, deadline, cancel)
        finally:
            chan.close()
            self.pool.release(conn)

    def kill_group(self, pgid: int, grace: float | None = None, *, retry: bool = True) -> bool:
        """Kill a process group on the device (TERM, then KILL after grace); True if it was found."""
        grace = self.kill_grace if grace is None else grace
        status = self._run_small(ssh_script.kill_command(pgid, grace), timeout=grace + 10, retry=retry)
        return status == 0

    def ping(self) -> float:
        """Open (or reuse) a connection and run `true`; return the latency in seconds."""
        start = time.monotonic()
        status = self._run_small("true", timeout=self.spec.connect_timeout)
        if status != 0:
            raise DriverError(REMOTE_SETUP_FAILED, f"`true` exited with {status} on {self.spec.host}",
                              before_start=True)
        return time.monotonic() - start

    def _connect(self) -> paramiko.Transport:
        pins = self.spec.host_key or self.pool.learned_host_key(self._key)

        def accepted(line: str) -> None:
            self.pool.learn_host_key(self._key, line)
            if self.on_host_key is not None:
                self.on_host_key(line)

        return connect(self.spec, pins, accepted)

    def _open(self, command: str, cancel: threading.Event | None = None, retry: bool = True):
        """Open a channel and exec command, retrying failures that happen before anything runs.

        Returns (conn, channel), or None if `cancel` was set before the command could start.
        """
        delays = (0.0, *self.retry_delays) if retry else (0.0,)
        for attempt, delay in enumerate(delays):
            if cancel is not None and cancel.wait(delay):
                return None
            if delay and cancel is None:
                time.sleep(delay)
            try:
                conn, chan = self.pool.open_session(self._key, self._connect, timeout=self.spec.connect_timeout)
            except DriverError as exc:
                if exc.code in _NOT_RETRIED or attempt == len(delays) - 1:
                    raise
                log.info("ssh %s: %s; retrying", self.spec.id, exc.code)
                last = exc
                continue
            try:
                # The wrapper blocks reading its env from stdin, so nothing runs until we write it.
                chan.exec_command(command)
                return conn, chan
            except (paramiko.SSHException, EOFError, OSError) as exc:
                chan.close()
                self.pool.release(conn)
                last = DriverError(CONNECTION_LOST, f"exec on {self.spec.host} failed: {exc}", before_start=True)
        raise last

    def _run_small(self, command: str, timeout: float, retry: bool = True) -> int | None:
        """Run a short command with no stdin; return its exit status."""
        conn, chan = self._open(command, retry=retry)
        try:
            chan.shutdown_write()
            chan.settimeout(timeout)
            while chan.recv(4096) or chan.recv_stderr_ready() and chan.recv_stderr(4096):
                pass  # output is not needed; reading keeps the window open
            if not chan.status_event.wait(timeout):
                raise DriverError(CONNECTION_LOST, f"no exit status from {self.spec.host}", before_start=False)
            return None if chan.exit_status == -1 else chan.exit_status
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            raise DriverError(CONNECTION_LOST, f"{self.spec.host}: {exc}", before_start=False) from None
        finally:
            chan.close()
            self.pool.release(conn)


class _Run:
    """The state of one run on its channel: drains output, watches the clock, kills on stop."""

    def __init__(self, driver: SSHDriver, req: ExecRequest, chan: paramiko.Channel, tag: bytes,
                 sink: OutputSink, on_start: StartCallback | None):
        self.driver, self.req, self.chan, self.tag, self.sink, self.on_start = driver, req, chan, tag, sink, on_start
        self.pre = bytearray()  # stdout before the protocol line (shell rc noise), dropped
        self.pgid: int | None = None
        self.cwd_missing = False
        self.started_at = None
        self.env_sent = False
        self.killed: str | None = None

    def drive(self, head: bytes, deadline: float, cancel: threading.Event | None) -> ExecResult:
        """Feed stdin, drain until the command ends or is killed, and build the result."""
        if len(head) + len(self.req.stdin) <= self.chan.out_window_size:
            self._write(head)  # fits the peer's window: sendall cannot block, so no thread for it
        else:
            threading.Thread(target=self._write, args=(head,), daemon=True, name="ssh-stdin").start()
        chan, req = self.chan, self.req
        poller = select.poll()  # not select(): a busy worker has more than 1024 descriptors
        poller.register(chan.fileno(), select.POLLIN)
        kill_asked = kill_sent = None
        killer: threading.Thread | None = None
        active_at = time.monotonic()
        while True:
            if self._drain():
                active_at = time.monotonic()
            if chan.closed or (chan.eof_received and chan.status_event.is_set()):
                self._drain(None)
                break
            if self.cwd_missing:
                break
            now = time.monotonic()
            if self.killed is None and ((cancel is not None and cancel.is_set()) or now >= deadline):
                self.killed = "canceled" if cancel is not None and cancel.is_set() else "timeout"
                kill_asked = now
            if self.killed and kill_sent is None:
                if self.pgid is not None:
                    kill_sent = now
                    killer = threading.Thread(target=self._kill, daemon=True, name="ssh-kill")
                    killer.start()
                elif now - kill_asked > req.kill_grace:
                    break  # the command never reported a pgid; closing the channel is all we can do
            if kill_sent is not None and now - kill_sent > req.kill_grace + _KILL_SLACK:
                break  # a process that escaped the group still holds the channel open
            tick = _TICK if self.killed or now - active_at < _QUIET_AFTER else _IDLE_TICK
            if chan.eof_received:
                chan.status_event.wait(tick)  # select() would spin: the pipe stays readable after EOF
            else:
                poller.poll(tick * 1000)
        if killer is not None:
            # The channel can close before the KILL (children that ignore TERM but left stdout);
            # a killed run returns only once the whole group had its KILL.
            killer.join(req.kill_grace + _KILL_SLACK)
        return self._result()

    def _write(self, head: bytes) -> None:
        try:
            self.chan.sendall(head)
            self.env_sent = True
            if self.req.stdin:
                self.chan.sendall(self.req.stdin)
            self.chan.shutdown_write()  # several agent CLIs wait for EOF on stdin
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited or the connection dropped; the reader reports which

    def _drain(self, limit: int | None = 32) -> bool:
        """Read what is there; True if anything was. Bounded by default: a command that never stops
        printing (`yes`) must not keep the loop from checking the deadline and cancel. Unbounded
        only after the channel closed."""
        chan, got = self.chan, False
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
        self.pgid = int(word[1])
        self.started_at = utcnow()
        call_on_start(self.on_start, self.pgid)
        self.sink.feed("stdout", rest)

    def _kill(self) -> None:
        try:
            self.driver.kill_group(self.pgid, self.req.kill_grace)
        except Exception:  # noqa: BLE001 - the run loop still closes the channel
            log.exception("ssh %s: killing process group %s failed", self.driver.spec.id, self.pgid)

    def _result(self) -> ExecResult:
        chan, spec = self.chan, self.driver.spec
        status = None if chan.exit_status == -1 else chan.exit_status
        if self.cwd_missing:
            raise DriverError(CWD_NOT_FOUND, f"working directory {self.req.cwd!r} does not exist on "
                              f"{spec.host}", before_start=True)
        # A normal end, even a death by signal, brings an exit status or an EOF before the close;
        # a dropped transport closes the channel without either.
        if self.killed is None and status is None and not chan.eof_received:
            self._lost()
        if self.pgid is None and self.killed is None:
            stderr = self.sink.stderr.getvalue()[-500:].decode(errors="replace").strip()
            raise DriverError(REMOTE_SETUP_FAILED, f"the shell on {spec.host} exited with {status} before "
                              f"starting the command: {stderr or '(no output)'}", before_start=True)
        return ExecResult(
            exit_code=status, stdout=self.sink.stdout.getvalue(), stderr=self.sink.stderr.getvalue(),
            stdout_truncated=self.sink.stdout.truncated, stderr_truncated=self.sink.stderr.truncated,
            killed=self.killed, pgid=self.pgid, started_at=self.started_at, finished_at=utcnow(),
        )

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
