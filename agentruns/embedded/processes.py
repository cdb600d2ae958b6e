"""Processes and ports on this machine: the pid, port and log-file helpers of the embedded servers, and
ServiceProcess, the supervised child that `agentruns dev` and the test suite run their services as.

Linux only: liveness and ownership are read from /proc.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceDied(RuntimeError):
    """A supervised process exited while it should be running."""


class ServiceProcess:
    """A service subprocess in its own session, with its combined output in a log file that can be waited on.

    Its own session keeps a terminal's Ctrl-C away from it, so the supervisor decides when and how it
    stops; signals go to the whole process group because gunicorn and Celery fork children.
    `die_with_parent` has the kernel SIGTERM it when the thread that started it dies (even by SIGKILL):
    start it from a thread that lives as long as the service, such as the main thread.
    """

    def __init__(self, argv: list[str], env: dict[str, str], name: str, log_path: Path | None = None, *,
                 die_with_parent: bool = False):
        self.name = name
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"agentruns-{name}-", suffix=".log")
            os.close(fd)
            log_path = Path(tmp)
        self.log_path = log_path
        with open(log_path, "wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_parent_death_signal() if die_with_parent else None)

    @property
    def pid(self) -> int:
        """The process id, also its process group id."""
        return self.proc.pid

    def log(self) -> str:
        """Everything it has printed so far."""
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """Raise ServiceDied, with the end of its log, if the process has exited."""
        if self.proc.poll() is not None:
            raise ServiceDied(f"{self.name} (pid {self.pid}) exited with code {self.proc.returncode}; "
                              f"last lines of {self.log_path}:\n{tail(self.log(), 30)}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Poll `ready` until it is true: ServiceDied if the process exits first, TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not {what} within {timeout:.0f} s; "
                                   f"last lines of {self.log_path}:\n{tail(self.log(), 30)}")
            time.sleep(0.05)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Wait until its log contains `text` (a service's "ready" line)."""
        self.wait_until(lambda: text in self.log(), f"log {text!r}", timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to its whole process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM the group, SIGKILL after `timeout`; returns the exit code.

        The group is SIGKILLed in any case once the process has exited: what is left of it (a gunicorn
        worker whose master is gone) would otherwise outlive its supervisor.
        """
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
        self.kill(signal.SIGKILL)
        return self.proc.wait()


def _parent_death_signal() -> Callable[[], None]:
    """A preexec_fn asking the kernel for SIGTERM when the parent dies (Linux PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls into it
    return lambda: libc.prctl(1, signal.SIGTERM)


def answers_http(port: int, path: str = "/healthz", host: str = "127.0.0.1") -> bool:
    """True when GET http://HOST:PORT/PATH answers 200 (http.client: no proxy from the environment applies)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# pids (from /proc)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()  # fields after "(comm)": state is [0], starttime [19]


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (with the pid, it names one process), or None."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an unreaped postmaster counts as gone)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until the process is gone; False if it still runs after `timeout`."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def cwd_of(pid: int) -> Path | None:
    """The process's working directory, or None when it is gone or not ours to inspect."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def command_name(pid: int) -> str:
    """The process's short command name ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# ports and log files


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (someone may take it before we bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:PORT (bind test)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def file_size(path: Path) -> int:
    """Size in bytes, 0 for a missing file (where a log's new part starts)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_from(path: Path, offset: int) -> str:
    """The file's text after byte `offset` ("" for a missing file)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = 20) -> str:
    """The last `lines` lines of `text`, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
