"""Run commands on this machine with subprocess: the embedded default driver.

Semantics match the ssh driver where they can:
- env: the child gets this process's environment overlaid with req.env, like a remote command gets
  the device user's environment plus req.env; the service's own configuration (AGENTRUNS_*,
  DATABASE_URL, REDIS_URL: the secret key and credentials) is never passed on.
- spec.login_shell is ignored: argv is exec'd directly, with this process's PATH.
- A missing executable is not an exception: the result has exit code 127 (126 when it is not
  executable), as a remote shell would report it.
- The command runs in its own session and process group; timeout and cancel kill the whole group
  (SIGTERM, then SIGKILL after req.kill_grace). A child that calls setsid itself escapes.
The run loop itself (deadline, cancel, stop, output, result) is drivers/_runner.py.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from functools import partial
from typing import IO

from ._common import OutputSink, utcnow, validate_env
from ._runner import Pacing, Runner, escalate
from .base import CWD_NOT_FOUND, DeviceSpec, DriverError, ExecRequest, ExecResult, OutputCallback, StartCallback

SERVICE_ENV = ("DATABASE_URL", "REDIS_URL")


def inherited_env() -> dict[str, str]:
    """This process's environment minus the service's own secrets and configuration."""
    return {k: v for k, v in os.environ.items() if k not in SERVICE_ENV and not k.startswith("AGENTRUNS_")}


_TICK = 0.05  # how often cancel, the deadline and a dying group are checked
_STUCK_PIPE_GRACE = 3.0  # after SIGKILL, how long to wait for pipes held by an escaped process


class LocalDriver:
    """Runs argv with subprocess on the worker's own machine."""

    def __init__(self, spec: DeviceSpec | None = None):
        self.spec = spec

    def run(
        self,
        req: ExecRequest,
        *,
        on_output: OutputCallback | None = None,
        on_start: StartCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ExecResult:
        """Run req to completion, a timeout, or until `cancel` is set; kill the whole group on stop."""
        if not req.argv:
            raise ValueError("argv must not be empty")
        validate_env(req.env)
        if not os.path.isdir(req.cwd):
            raise DriverError(CWD_NOT_FOUND, f"working directory {req.cwd!r} does not exist", before_start=True)
        return _LocalRun(req, on_output, on_start).run(cancel)

    def kill_group(self, pgid: int, grace: float = 2.0) -> bool:
        """Kill a process group on this machine (TERM, then KILL); True if it was found."""
        _check_pgid(pgid)
        return escalate(partial(_signal_group, pgid), partial(_wait_group_gone, pgid), grace)

    def ping(self) -> float:
        """Nothing to connect to: return the time to run `true` locally."""
        start = time.monotonic()
        subprocess.run(["true"], check=False)
        return time.monotonic() - start


class _LocalRun(Runner):
    """One subprocess: threads drain its pipes and wait for its leader; the loop only watches them.

    The leader is left a zombie (see _wait_leader) until exit_code() or, during a stop, _wait_gone
    reaps it, so its pgid cannot be reused by an unrelated process while we may still signal it.
    """

    pacing = Pacing(tick=_TICK, idle_tick=_TICK, escape_slack=_STUCK_PIPE_GRACE)

    def __init__(self, req: ExecRequest, on_output: OutputCallback | None, on_start: StartCallback | None):
        super().__init__(req, on_output, on_start)
        self.proc: subprocess.Popen[bytes] | None = None
        self._wake = threading.Event()  # a pipe closed or the leader exited
        self._leader_exited = threading.Event()
        self._readers: list[threading.Thread] = []
        self._seen = 0  # output bytes counted by the last read()

    def start(self, cancel: threading.Event | None) -> ExecResult | None:
        """Start the child in a session of its own; a missing executable is a result, as on a shell."""
        req = self.req
        try:
            self.proc = subprocess.Popen(
                req.argv, cwd=req.cwd, env={**inherited_env(), **req.env},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, close_fds=True,
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            return _exec_failure(req, exc)
        self.started(self.proc.pid)  # start_new_session makes the child a session and group leader
        return None

    def attach(self) -> None:
        """Write stdin and drain both pipes in threads; another thread waits for the leader."""
        proc, wake = self._child(), self._wake
        _thread(_write_stdin, proc.stdin, self.req.stdin)
        self._readers = [_thread(_drain, proc.stdout, "stdout", self.sink, wake),
                         _thread(_drain, proc.stderr, "stderr", self.sink, wake)]
        _thread(_wait_leader, proc.pid, self._leader_exited, wake)

    def read(self) -> bool:
        """The reader threads feed the sink; True if they did since the last call."""
        seen = self.sink.stdout.total + self.sink.stderr.total
        fresh, self._seen = seen != self._seen, seen
        return fresh

    def wait(self, timeout: float) -> None:
        """Sleep until a pipe closes, the leader exits, or `timeout` passes."""
        self._wake.wait(timeout)
        self._wake.clear()

    def ended(self) -> bool:
        """True once the leader exited and both pipes are closed."""
        return self._leader_exited.is_set() and not any(t.is_alive() for t in self._readers)

    def stop_group(self, pgid: int, grace: float) -> None:
        """TERM, wait for the group to go (reaping the leader first), KILL."""
        escalate(partial(_signal_group, pgid), partial(self._wait_gone, pgid), grace)

    def _wait_gone(self, pgid: int, until: float) -> None:
        # While the leader lives, so does the group: wait for it without scanning /proc. Children that
        # ignore TERM may live on after it, so then reap the leader first: while it is a zombie the group
        # "exists" and the poll would never end. Its pgid stays reserved as long as any member lives, so
        # the KILL cannot hit a stranger.
        if self._leader_exited.wait(max(0.0, until - time.monotonic())):
            self._child().wait()
            _wait_group_gone(pgid, until)

    def exit_code(self, killed: str | None) -> int | None:
        """Reap the leader; None when a signal killed it."""
        returncode = self._child().wait()
        return returncode if returncode >= 0 else None

    def close(self) -> None:
        """Nothing to release: the reader threads close the pipes when they end."""

    def _child(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "start() launches the child first"
        return self.proc


def _thread(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True, name=f"local-{target.__name__}")
    t.start()
    return t


def _write_stdin(pipe: IO[bytes], data: bytes) -> None:
    # In a thread so a large stdin cannot deadlock against a child that fills stdout first.
    try:
        if data:
            pipe.write(data)
    except (BrokenPipeError, OSError):
        pass  # the child exited or closed stdin without reading everything
    finally:
        try:
            pipe.close()  # several agent CLIs wait for EOF on stdin
        except OSError:
            pass


def _drain(pipe: IO[bytes], stream: str, sink: OutputSink, wake: threading.Event) -> None:
    fd = pipe.fileno()
    try:
        while chunk := os.read(fd, 65536):
            sink.feed(stream, chunk)
    finally:
        pipe.close()
        wake.set()


def _wait_leader(pid: int, done: threading.Event, wake: threading.Event) -> None:
    # WNOWAIT leaves the child a zombie for Popen.wait() to reap, keeping its pgid reserved.
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    done.set()
    wake.set()


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_group_gone(pgid: int, until: float) -> None:
    while time.monotonic() < until and _group_alive(pgid):
        time.sleep(_TICK)


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group.

    kill(-pgid, 0) also succeeds for zombies, and orphans may stay zombies for a while when PID 1
    reaps lazily (seen in containers), which would turn every kill into a full grace period.
    """
    if not os.path.isdir("/proc/self"):
        return _signal_group(pgid, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            return True
    return False


def _check_pgid(pgid: int) -> None:
    # kill(-1) or kill(0) would signal far more than one run: refuse anything but a real group.
    if not isinstance(pgid, int) or pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid!r}")


def _exec_failure(req: ExecRequest, exc: OSError) -> ExecResult:
    if exc.filename == req.cwd:  # chdir failed in the child (removed since the check, or no access)
        raise DriverError(CWD_NOT_FOUND, f"working directory {req.cwd!r}: {exc.strerror}", before_start=True)
    code, why = (126, "permission denied") if isinstance(exc, PermissionError) else (127, "command not found")
    now = utcnow()
    return ExecResult(
        exit_code=code, stdout=b"", stderr=f"{req.argv[0]}: {why}\n".encode(),
        started_at=now, finished_at=now,
    )
