"""The one interface every transport implements, and the one result type it returns.

Shaped after invoke's Runner/Result and fabric's Remote: a driver runs an argv in a cwd with an
environment and a stdin payload, streams output to a callback, and knows nothing about agents.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Error codes a driver raises; the user can act on each of them.
DEVICE_UNREACHABLE = "device_unreachable"
AUTH_FAILED = "auth_failed"
HOST_KEY_MISMATCH = "host_key_mismatch"
HOST_KEY_UNKNOWN = "host_key_unknown"
CONNECTION_LOST = "connection_lost"
CWD_NOT_FOUND = "cwd_not_found"
# The device's shell failed before the command could start (e.g. the account's shell is nologin).
REMOTE_SETUP_FAILED = "remote_setup_failed"
# The device stayed unreachable longer than the driver's limit while the command ran detached there.
DEVICE_LOST = "device_lost"
# The run's spool on the device is gone (swept, or the device was reset): its result cannot be read.
SPOOL_GONE = "spool_gone"
# The device's host resolved to an address the operator does not allow devices to use (loopback, the
# cloud metadata address, ...: AGENTRUNS_DEVICE_NETWORKS); nothing was connected to.
DEVICE_ADDRESS_REFUSED = "device_address_refused"

# Given an IP address the driver is about to connect to: why it may not, or None when it may.
AddressCheck = Callable[[str], str | None]


class DriverError(Exception):
    """A transport failure with a machine-readable code.

    `before_start` is True when the command never started on the device, which is the only case a
    caller may retry without risking a second execution. `pgid` is set when the command did start
    (connection_lost): it may still be running, and kill_group(pgid) can stop it later.
    """

    def __init__(self, code: str, message: str, *, before_start: bool, pgid: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.before_start = before_start
        self.pgid = pgid

    def __reduce__(self):
        # Exceptions unpickle as cls(*args), which would lose the keyword-only fields (Celery and
        # multiprocessing pickle exceptions).
        return (_rebuild_driver_error, (self.code, self.message, self.before_start, self.pgid))


def _rebuild_driver_error(code: str, message: str, before_start: bool, pgid: int | None) -> DriverError:
    return DriverError(code, message, before_start=before_start, pgid=pgid)


@dataclass(frozen=True)
class DeviceSpec:
    """How to reach a device; secrets are already decrypted and must never be logged."""

    id: str
    driver: str  # "ssh" | "local"
    host: str | None = None
    port: int = 22
    username: str | None = None
    private_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_key: str | None = None  # one known_hosts line
    trust_on_first_use: bool = False
    login_shell: bool = True  # run under the user's login shell so PATH matches an interactive one
    connect_timeout: float = 10.0
    # Every address the host resolves to is checked before connecting (None: no check).
    address_check: AddressCheck | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ExecRequest:
    """One command to run: argv is never joined from user input without quoting."""

    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict, repr=False)
    stdin: bytes = b""
    timeout: float = 1800.0
    kill_grace: float = 2.0  # seconds between TERM and KILL
    output_cap: int = 1024 * 1024  # bytes kept per stream
    # Names the run's spool on the device (the ssh driver runs the command detached, writing its
    # output there, so another connection or worker can re-attach). None: a fresh random key.
    spool_key: str | None = None
    # Also give the command its stdin as a private file (mode 600), its path in this environment
    # variable, where the driver has a copy of stdin anyway (ssh: a file of the run's spool, removed
    # with it). A driver without one leaves the variable as env has it.
    stdin_file_env: str | None = None


@dataclass(frozen=True)
class AttachTicket:
    """What a driver needs to re-attach to a command that already runs detached on the device.

    The output is read again from byte 0 of each stream, so the result holds the whole output; only
    the bytes past `emitted` (what earlier connections already streamed as live output) reach the
    output callback.
    """

    pgid: int
    started_at: datetime | None = None
    emitted_stdout: int = 0
    emitted_stderr: int = 0


@dataclass
class ExecResult:
    exit_code: int | None  # None when the process died from a signal or was never reaped
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    killed: str | None = None  # None | "timeout" | "canceled" | "detached" (left running, not stopped)
    pgid: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


OutputCallback = Callable[[str, bytes], None]  # (stream name "stdout"|"stderr", chunk)
StartCallback = Callable[[int], None]  # receives the process group id once the command runs
DETACHED = "detached"


class Driver(Protocol):
    def run(
        self,
        req: ExecRequest,
        *,
        on_output: OutputCallback | None = None,
        on_start: StartCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ExecResult:
        """Run req to completion, a timeout, or until `cancel` is set; kill the whole tree on stop."""

    def kill_group(self, pgid: int) -> bool:
        """Kill a process group on the device (TERM, then KILL); True if it was found."""

    def ping(self) -> float:
        """Open (or reuse) a connection and run `true`; return the latency in seconds."""


class DetachedDriver(Driver, Protocol):
    """A driver whose commands outlive their connection and their worker (the ssh driver).

    run() and attach() take a `detach` event: once set, the run returns (killed="detached") without
    stopping the command, which keeps running on the device for a later attach().
    """

    def run(self, req: ExecRequest, *, on_output: OutputCallback | None = None,
            on_start: StartCallback | None = None, cancel: threading.Event | None = None,
            detach: threading.Event | None = None) -> ExecResult:
        """As Driver.run, and leave the command running when `detach` is set."""

    def attach(self, req: ExecRequest, ticket: AttachTicket, *, on_output: OutputCallback | None = None,
               cancel: threading.Event | None = None, detach: threading.Event | None = None) -> ExecResult:
        """Re-attach to req's command (started earlier, under req.spool_key) and follow it to its end."""

    def discard(self, spool_key: str, pgid: int | None = None) -> None:
        """Forget a finished run's spool on the device (best effort, in the background); with pgid, also
        stop that process group first (a run given up while the device was unreachable)."""
