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
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from ._common import OutputSink, call_on_start, utcnow, validate_env
from .base import CWD_NOT_FOUND, DeviceSpec, DriverError, ExecRequest, ExecResult, OutputCallback, StartCallback

SERVICE_ENV = ("DATABASE_URL", "REDIS_URL")


def inherited_env() -> dict[str, str]:
    """This process's environment minus the service's own secrets and configuration."""
    return {k: v for k, v in os.environ.items() if k not in SERVICE_ENV and not k.startswith("AGENTRUNS_")}


_TICK = 0.05  # how often cancel and the deadline are checked
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
        sink = OutputSink(req.output_cap, on_output)
        deadline = time.monotonic() + req.timeout
        try:
            proc = subprocess.Popen(
                req.argv, cwd=req.cwd, env={**inherited_env(), **req.env},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, close_fds=True,
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            return _exec_failure(req, exc)
        started_at = utcnow()
        pgid = proc.pid  # start_new_session makes the child a session and group leader
        call_on_start(on_start, pgid)
        wake = threading.Event()
        leader_exited = threading.Event()
        threads = [
            _thread(_write_stdin, proc.stdin, req.stdin),
            _thread(_drain, proc.stdout, "stdout", sink, wake),
            _thread(_drain, proc.stderr, "stderr", sink, wake),
            _thread(_wait_leader, proc.pid, leader_exited, wake),
        ]
        killed = _supervise(proc, pgid, req, threads[1:3], leader_exited, wake, deadline, cancel)
        returncode = proc.wait()
        return ExecResult(
            exit_code=returncode if returncode >= 0 else None,
            stdout=sink.stdout.getvalue(), stderr=sink.stderr.getvalue(),
            stdout_truncated=sink.stdout.truncated, stderr_truncated=sink.stderr.truncated,
            killed=killed, pgid=pgid, started_at=started_at, finished_at=utcnow(),
        )

    def kill_group(self, pgid: int, grace: float = 2.0) -> bool:
        """Kill a process group on this machine (TERM, then KILL); True if it was found."""
        _check_pgid(pgid)
        if not _signal_group(pgid, signal.SIGTERM):
            return False
        end = time.monotonic() + grace
        while time.monotonic() < end and _group_alive(pgid):
            time.sleep(_TICK)
        _signal_group(pgid, signal.SIGKILL)
        return True

    def ping(self) -> float:
        """Nothing to connect to: return the time to run `true` locally."""
        start = time.monotonic()
        subprocess.run(["true"], check=False)
        return time.monotonic() - start


def _supervise(proc, pgid, req, readers, leader_exited, wake, deadline, cancel) -> str | None:
    """Wait for the leader to exit and both pipes to close, killing the group on timeout or cancel.

    The leader is normally not reaped before this returns (see _wait_leader), so its pgid cannot be
    reused by an unrelated process while we may still signal it.
    """
    killed = None
    kill_at = give_up_at = None
    while True:
        wake.clear()
        if leader_exited.is_set() and not any(t.is_alive() for t in readers):
            break
        now = time.monotonic()
        if killed is None and ((cancel is not None and cancel.is_set()) or now >= deadline):
            killed = "canceled" if cancel is not None and cancel.is_set() else "timeout"
            _signal_group(pgid, signal.SIGTERM)
            kill_at = now + req.kill_grace
        elif kill_at is not None and now >= kill_at:
            _signal_group(pgid, signal.SIGKILL)
            kill_at, give_up_at = None, now + _STUCK_PIPE_GRACE
        elif give_up_at is not None and now >= give_up_at and leader_exited.is_set():
            break  # a process that left our group still holds the pipes; stop waiting for it
        wake.wait(_TICK)
    if kill_at is not None:
        # The leader died on TERM, but children that ignore TERM may live on in the group. Reap the
        # leader first: while it is a zombie the group "exists" and the poll below would never end.
        # Its pgid stays reserved as long as any member lives, so the KILL cannot hit a stranger.
        proc.wait()
        while time.monotonic() < kill_at and _group_alive(pgid):
            time.sleep(_TICK)
        _signal_group(pgid, signal.SIGKILL)
    return killed


def _thread(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True, name=f"local-{target.__name__}")
    t.start()
    return t


def _write_stdin(pipe, data: bytes) -> None:
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


def _drain(pipe, stream: str, sink: OutputSink, wake: threading.Event) -> None:
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
