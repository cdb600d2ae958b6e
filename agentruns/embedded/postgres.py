"""Embedded PostgreSQL: initdb on first use, pg_ctl start/stop, the `agentruns` database.

PostgreSQL refuses to run as root, so as root initdb/pg_ctl run as the system user `agentruns-pg`
(created on first use) via `runuser`, and the directories on the way to the data dir and the
binaries are made traversable (o+x, not readable) for that user.
"""
from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from agentruns.embedded.processes import alive, cwd_of, file_size, free_port, read_from, tail, wait_gone
from agentruns.embedded.server import EmbeddedServer, check_owner, package_dir, register

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "agentruns-pg"  # runs PostgreSQL when we are root
PG_SUPERUSER = "postgres"
PG_DATABASE = "agentruns"


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
            raise RuntimeError(f"initdb failed for {data_dir}:\n{tail(r.stdout + r.stderr)}")
        log.info("initdb %s in %.2f s", data_dir, time.monotonic() - t)
    else:
        _reclaim_postgres(data_dir, pg)

    log_path = data_dir / "postgres.log"
    for attempt in range(1 if port else 3):
        chosen = port or free_port()
        # Unix socket paths are limited to 107 bytes; past that, TCP only.
        socket_dir = str(data_dir) if len(f"{data_dir}/.s.PGSQL.{chosen}.lock") < 100 else ""
        settings = ["-p", str(chosen), "-k", shlex.quote(socket_dir),
                    "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        if fast:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        offset = file_size(log_path)
        t = time.monotonic()
        started: subprocess.CompletedProcess[str] | None
        try:
            started = pg("pg_ctl", "start", "-D", str(data_dir), "-l", str(log_path), "-w",
                         "-t", str(max(1, int(timeout))), "-o", " ".join(settings), timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            started = None
        if started is not None and started.returncode == 0:
            break
        pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w")  # don't leave a half-started server
        new_log = read_from(log_path, offset)
        if "Address already in use" in new_log and not port and attempt < 2:
            continue  # someone took the free port we picked; pick another
        output = "timed out" if started is None else (started.stdout + started.stderr).strip()
        raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{chosen} ({output}); "
                           f"log {log_path}:\n{tail(new_log)}")
    pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    log.info("PostgreSQL (pid %s) on 127.0.0.1:%s in %.2f s", pid, chosen, time.monotonic() - t)

    def stop() -> None:
        r = pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "fast", "-w")
        if alive(pid):
            log.warning("pg_ctl stop -m fast failed (%s); trying immediate", (r.stdout + r.stderr).strip())
            pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w")
        wait_gone(pid)

    server = register(EmbeddedServer(
        "PostgreSQL", f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{chosen}/{PG_DATABASE}",
        pid, chosen, data_dir, log_path, stop))
    try:
        _create_database(chosen, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _postgres_bin_dir() -> Path:
    pkg = package_dir("pgserver")
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
    check_owner(data_dir)
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except FileNotFoundError:
        return
    except ValueError:
        pid = 0  # empty or torn file: the server died while starting
    if pid and cwd_of(pid) == data_dir:  # a postmaster chdirs into its data dir: it is ours, still running
        log.warning("stopping PostgreSQL (pid %s) left running on %s by a previous run", pid, data_dir)
        pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "fast", "-w")
        if alive(pid):
            pg("pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w")
        wait_gone(pid)
    elif pid and alive(pid) and cwd_of(pid) is None:
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
