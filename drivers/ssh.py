"""Run commands on a device over SSH (paramiko): one pooled transport, one channel per run.

The command runs detached on the device and spools its output there, so a run survives a dropped
connection (it re-attaches) and its worker (another one attaches, `attach()`). See ssh_script.py for
the remote wrapper (pgid line, cwd check, env and stdin, login shell, spool), ssh_facts.py for what
the device offers the wrapper, ssh_spool.py for the spool and the attach, ssh_run.py for one run
across its channels, ssh_janitor.py for removing spools, ssh_kill.py for stopping process groups in
batches, ssh_pool.py for connection reuse and ssh_connect.py for host key pinning and auth.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from functools import partial

import paramiko

from . import ssh_facts, ssh_script, ssh_spool
from .base import (
    AUTH_FAILED,
    CONNECTION_LOST,
    DEVICE_ADDRESS_REFUSED,
    HOST_KEY_MISMATCH,
    HOST_KEY_UNKNOWN,
    REMOTE_SETUP_FAILED,
    AttachTicket,
    DeviceSpec,
    DriverError,
    ExecRequest,
    ExecResult,
    OutputCallback,
    StartCallback,
)
from .ssh_connect import HostKeyCallback, connect
from .ssh_janitor import get_janitor
from .ssh_kill import get_batcher
from .ssh_pool import PooledTransport, TransportPool, close_quietly, get_pool
from .ssh_run import SSHRun

log = logging.getLogger("agentruns.drivers.ssh")

_NOT_RETRIED = {AUTH_FAILED, HOST_KEY_MISMATCH, HOST_KEY_UNKNOWN, DEVICE_ADDRESS_REFUSED}
_BACKSTOP_MARGIN = 30.0  # the remote `timeout` fires this long after ours, only if we are gone


class SSHDriver:
    """Runs argv on an SSH device. Thread-safe; cheap to create per run (transports are pooled).

    on_host_key: called with a known_hosts line when a key is accepted on first use
    (spec.trust_on_first_use and no spec.host_key); persist it as the device's host_key. Later
    connects in this process are held to that key even before the caller pins it.
    """

    def __init__(self, spec: DeviceSpec, on_host_key: HostKeyCallback | None = None, *,
                 pool: TransportPool | None = None, retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0),
                 kill_grace: float = 2.0, timeout_backstop: bool = True, device_lost_seconds: float = 300.0):
        self.spec = spec
        self.on_host_key = on_host_key
        self.retry_delays = retry_delays  # also the pace of reconnects (the last one repeats)
        self.kill_grace = kill_grace  # for kill_group(); runs use req.kill_grace
        self.timeout_backstop = timeout_backstop
        # A run whose device stays unreachable this long fails device_lost (its command may go on).
        self.device_lost_seconds = device_lost_seconds
        self._pool = pool
        secret = f"{spec.private_key or ''}\0{spec.password or ''}".encode()
        # Secrets are part of the identity (a rotated key must not reuse the old connection) but
        # only as a digest; so is the address check (a connection made under a looser allow-list,
        # e.g. by another app in the same test process, is not reused under a stricter one).
        self._key = (spec.id, spec.host, spec.port, spec.username, spec.host_key,
                     spec.trust_on_first_use, hashlib.sha256(secret).hexdigest(), spec.address_check)

    @property
    def pool_key(self) -> tuple:
        """This device's key in the pool (no secrets in it, only a digest)."""
        return self._key

    @property
    def pool(self) -> TransportPool:
        """The pool this driver uses (the process-wide one unless given)."""
        return self._pool if self._pool is not None else get_pool()

    def run(self, req: ExecRequest, *, on_output: OutputCallback | None = None,
            on_start: StartCallback | None = None, cancel: threading.Event | None = None,
            detach: threading.Event | None = None) -> ExecResult:
        """Run req to completion, a timeout, or until `cancel` is set; kill the whole group on stop.

        A dropped connection is re-attached; once `detach` is set the run returns at once and leaves
        the command running for attach() (killed="detached").
        """
        nonce = secrets.token_hex(8)
        backstop = req.timeout + req.kill_grace + _BACKSTOP_MARGIN if self.timeout_backstop else None
        # Built once the connection is known: the wrapper depends on what its device offers.
        command = partial(ssh_script.build_command, req.argv, req.cwd, nonce, login_shell=self.spec.login_shell,
                          backstop=backstop, kill_grace=req.kill_grace, spool_key=req.spool_key,
                          stdin_len=len(req.stdin), stdin_inline=ssh_script.inline_stdin(req.stdin),
                          spool_cap=ssh_spool.spool_cap(req.output_cap), stdin_file=req.stdin_file_env)
        # The wrapper sets the stdin file's variable itself, to the spool's copy.
        env = {k: v for k, v in req.env.items() if k != req.stdin_file_env}
        head = ssh_script.stdin_payload(env, req.stdin)
        return SSHRun(self, req, command, head, nonce, on_output, on_start).run(cancel, detach)

    def attach(self, req: ExecRequest, ticket: AttachTicket, *, on_output: OutputCallback | None = None,
               cancel: threading.Event | None = None, detach: threading.Event | None = None) -> ExecResult:
        """Follow req's command, started earlier under req.spool_key, to its end; never start it again.

        req.timeout is what is left of the run's time. The result holds the whole output (read again
        from the spool); on_output gets only what the ticket says was not streamed yet.
        """
        if not req.spool_key:
            raise ValueError("attach needs the run's spool key")
        run = SSHRun(self, req, "", b"", secrets.token_hex(8), on_output, None, ticket=ticket)
        return run.run(cancel, detach)

    def discard(self, spool_key: str, pgid: int | None = None) -> None:
        """Remove a finished run's spool from the device, in the background and batched with others;
        with pgid, kill the run's process group first if its spool says it still runs."""
        get_janitor().discard(self._key, spool_key, lambda command: self._run_small(command, 10.0, retry=False),
                              stop=pgid is not None)

    def kill_group(self, pgid: int, grace: float | None = None, *, retry: bool = True) -> bool:
        """Kill a process group on the device (TERM, then KILL after grace); True if it was found.

        Batched with the other stops of this device asked for meanwhile (ssh_kill.py)."""
        grace = self.kill_grace if grace is None else grace
        ssh_script.check_pgid(pgid)  # here too: one bad pgid must not fail the batch it would join

        def kill(pgids: list[int], grace: float) -> set[int]:
            status, out = self._run_short(ssh_script.kill_command(pgids, grace), timeout=grace + 10, retry=retry)
            if status != 0:
                raise DriverError(REMOTE_SETUP_FAILED, f"the kill script exited with {status} on {self.spec.host}",
                                  before_start=False)
            return {int(w[1]) for line in out.decode(errors="replace").splitlines()
                    if len(w := line.split()) == 2 and w[0] == "found" and w[1].isdigit()}

        return get_batcher().kill(self._key, pgid, grace, kill)

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

    def open_channel(self, command: str | Callable[..., str], cancel: threading.Event | None = None,
                     retry: bool = True, spare: bool = False) -> tuple[PooledTransport, paramiko.Channel] | None:
        """Open a channel and exec command, retrying failures that happen before anything runs.

        command: the exec string, or a function that makes it from the device's facts (ssh_facts.py),
        learned once per connection. spare: a short command, which may take a connection's room kept
        beyond its runs (ssh_pool.SPARE_CHANNELS). Returns (conn, channel), or None if `cancel` was set
        before the command could start.
        """
        delays = (0.0, *self.retry_delays) if retry else (0.0,)
        for attempt, delay in enumerate(delays):
            if cancel is not None and cancel.wait(delay):
                return None
            if delay and cancel is None:
                time.sleep(delay)
            try:
                conn, chan = self.pool.open_session(self._key, self._connect, timeout=self.spec.connect_timeout,
                                                    spare=spare)
            except DriverError as exc:
                if exc.code in _NOT_RETRIED or attempt == len(delays) - 1:
                    raise
                log.info("ssh %s: %s; retrying", self.spec.id, exc.code)
                last = exc
                continue
            try:
                if callable(command):
                    if conn.facts is None:
                        conn.facts = self._probe(conn)
                    assert isinstance(conn.facts, ssh_facts.DeviceFacts)
                    exec_string = command(facts=conn.facts)
                else:
                    exec_string = command
                # The wrapper blocks reading its env from stdin, so nothing runs until we write it.
                chan.exec_command(exec_string)
                return conn, chan
            except (paramiko.SSHException, EOFError, OSError) as exc:
                close_quietly(chan)
                self.pool.release(conn)
                last = DriverError(CONNECTION_LOST, f"exec on {self.spec.host} failed: {exc}", before_start=True)
        raise last

    def _probe(self, conn: PooledTransport) -> ssh_facts.DeviceFacts:
        """Ask the device what its shell offers (ssh_facts.PROBE), on a channel of its own; a probe that
        fails leaves this connection on the generic wrapper."""
        try:
            chan = conn.transport.open_session(timeout=self.spec.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("ssh %s: probing the device failed (%s); the generic wrapper it is", self.spec.id, exc)
            return ssh_facts.UNKNOWN
        try:
            chan.settimeout(self.spec.connect_timeout)
            chan.exec_command(ssh_facts.PROBE)
            chan.shutdown_write()
            out = b""
            while chunk := chan.recv(4096):
                out += chunk
            return ssh_facts.parse(out) if chan.recv_exit_status() == 0 else ssh_facts.UNKNOWN
        except (TimeoutError, paramiko.SSHException, EOFError, OSError) as exc:
            log.info("ssh %s: probing the device failed (%s); the generic wrapper it is", self.spec.id, exc)
            return ssh_facts.UNKNOWN
        finally:
            close_quietly(chan)

    def _run_small(self, command: str, timeout: float, retry: bool = True) -> int | None:
        """Run a short command with no stdin; return its exit status."""
        return self._run_short(command, timeout, retry)[0]

    def _run_short(self, command: str, timeout: float, retry: bool = True) -> tuple[int | None, bytes]:
        """Run a short command with no stdin (in a pooled connection's spare room); return its exit
        status and the start of its stdout."""
        opened = self.open_channel(command, retry=retry, spare=True)
        assert opened is not None, "only a cancel event ends open_channel without one"
        conn, chan = opened
        out = b""
        try:
            chan.shutdown_write()
            chan.settimeout(timeout)
            while chunk := chan.recv(4096):
                out = (out + chunk)[:1 << 20]
                while chan.recv_stderr_ready():  # not needed; reading keeps the window open
                    chan.recv_stderr(4096)
            if not chan.status_event.wait(timeout):
                raise DriverError(CONNECTION_LOST, f"no exit status from {self.spec.host}", before_start=False)
            return (None if chan.exit_status == -1 else chan.exit_status), out
        except (TimeoutError, EOFError, OSError, paramiko.SSHException) as exc:
            raise DriverError(CONNECTION_LOST, f"{self.spec.host}: {exc!r}", before_start=False) from None
        finally:
            close_quietly(chan)
            self.pool.release(conn)
