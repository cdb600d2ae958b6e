"""Baselines for bench.run_latency, each measured one sample at a time so they can be interleaved
with the service's own samples (a noisy machine then slows all of them alike).

- BareExec: paramiko, one already-open Transport with TCP_NODELAY, a new channel per `true`
  (what the ssh driver does per run, minus everything else). With LOGIN_EXEC, the same exec of
  `bash -lc 'cat >/dev/null; true'` with a prompt on stdin: what any implementation must start on
  the device for the user's PATH (issue #16's baseline).
- DriverNoop: the ssh driver itself running the custom provider's invocation of `true` (the remote
  wrapper, login shell, prompt file): no API, queue or database. Not a target, it shows how much of
  a run's time is spent on the device side.
- CeleryNoop: a bare Celery no-op task round trip (Redis broker and result backend) through its own
  threads-pool worker subprocess (bench/celery_noop.py).
"""
from __future__ import annotations

import io
import os
import socket
import sys
import time
import uuid
from typing import Protocol

import paramiko

from bench._stack import ROOT, Bench, stop_proc


class Baseline(Protocol):
    """What the phases use of a baseline: one timed sample, and closing it."""

    def sample(self) -> float: ...

    def close(self) -> None: ...


# The command and stdin of the login-shell baseline.
LOGIN_EXEC = ("bash -lc 'cat >/dev/null; true'", b"benchmark prompt\n")


class BareExec:
    def __init__(self, server, command: str = "true", stdin: bytes = b""):
        self.command, self.stdin = command, stdin
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = paramiko.Transport(sock)
        self.transport.start_client(timeout=10)
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(server.private_key))
        self.transport.auth_publickey(server.username, key)

    def sample(self) -> float:
        t0 = time.perf_counter()
        chan = self.transport.open_session(timeout=10)
        chan.exec_command(self.command)
        if self.stdin:  # only then: the `true` baseline stays exactly what it was
            chan.sendall(self.stdin)
            chan.shutdown_write()
        status = chan.recv_exit_status()
        chan.close()
        elapsed = time.perf_counter() - t0
        if status != 0:
            raise RuntimeError(f"bare exec of `{self.command}` exited with {status}")
        return elapsed

    def close(self) -> None:
        self.transport.close()


class DriverNoop:
    def __init__(self, server, cwd: str, login_shell: bool = True):
        from drivers.ssh import SSHDriver
        from drivers.ssh_pool import TransportPool
        from providers.base import RunSpec
        from providers.custom import Custom

        self.pool = TransportPool()
        self.driver = SSHDriver(server.spec(id="bench-driver-noop", login_shell=login_shell), pool=self.pool)
        self.cwd = cwd
        self.provider = Custom()
        self.spec = lambda: RunSpec(run_id=str(uuid.uuid4()), prompt="benchmark", command="true",
                                    device_username=server.username)

    def sample(self) -> float:
        from drivers.base import ExecRequest

        t0 = time.perf_counter()
        inv, key = self.provider.build(self.spec()), f"bench-{uuid.uuid4().hex}"
        result = self.driver.run(ExecRequest(argv=inv.argv, cwd=self.cwd, env=inv.env, stdin=inv.stdin, timeout=30,
                                             spool_key=key, stdin_file_env=inv.stdin_file_env))
        elapsed = time.perf_counter() - t0
        self.driver.discard(key)  # as a worker does once the result is recorded (batched, in the background)
        if result.exit_code != 0:
            raise RuntimeError(f"driver no-op exited with {result.exit_code}: {result.stderr[-300:]!r}")
        return elapsed

    def close(self) -> None:
        self.pool.close()


class CeleryNoop:
    def __init__(self, bench: Bench, redis_url: str, concurrency: int = 16):
        from tests.stack import Proc

        url = redis_url.rsplit("/", 1)[0] + "/2"  # its own database on the same Redis server
        os.environ["BENCH_CELERY_URL"] = url
        env = {**os.environ, "BENCH_CELERY_URL": url, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = Proc([sys.executable, "-m", "celery", "-A", "bench.celery_noop", "worker", "--pool", "threads",
                          "--concurrency", str(concurrency), "-Q", "bench-noop", "--without-gossip",
                          "--without-mingle", "--loglevel", "INFO", "--hostname", f"bench-noop@%h:{os.getpid()}"],
                         env, "bench-celery-noop")
        bench.on_exit(stop_proc, self.proc)
        self.proc.wait_for("ready.", timeout=60)
        from bench.celery_noop import app, noop

        self.app, self.task = app, noop

    def sample(self) -> float:
        t0 = time.perf_counter()
        self.task.delay().get(timeout=10)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.app.close()
        stop_proc(self.proc)
