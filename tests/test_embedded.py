"""The embedded PostgreSQL and Redis used by `agentruns dev` and the test suite, and ServiceProcess, the
supervised child both run their services as."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import redis

from agentruns.embedded import start_postgres, start_redis
from agentruns.embedded.processes import ServiceDied, ServiceProcess, wait_gone


def running(pid: int) -> bool:
    # A zombie counts as gone: where pid 1 does not reap, a stopped postmaster lingers as one.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_postgres_and_redis_start_serve_stop_and_keep_data(tmp_path):
    pg = start_postgres(tmp_path / "pg", fast=True)
    rd = start_redis(tmp_path / "redis")
    try:
        assert pg.url.startswith("postgresql+psycopg://") and pg.url.endswith(f":{pg.port}/agentruns")
        assert rd.url == f"redis://127.0.0.1:{rd.port}/0"
        with psycopg.connect(libpq_url(pg.url), autocommit=True) as conn:
            assert conn.execute("SELECT current_database(), 1 + 1").fetchone() == ("agentruns", 2)
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        client = redis.Redis.from_url(rd.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        pg.stop()
        rd.stop()
    assert not running(pg.pid) and not running(rd.pid)
    pg.stop()  # idempotent
    rd.stop()

    with start_postgres(tmp_path / "pg", fast=True) as again:  # reuses the data dir: no initdb
        assert again.pid != pg.pid
        with psycopg.connect(libpq_url(again.url)) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("still here",)
    assert not running(again.pid)


def test_servers_left_by_a_crashed_process_are_stopped_on_next_start(tmp_path):
    # The child starts both servers and dies without running its atexit hooks, as after a kill -9.
    child = textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        from agentruns.embedded import start_postgres, start_redis
        pg = start_postgres(Path({str(tmp_path / "pg")!r}), fast=True)
        rd = start_redis(Path({str(tmp_path / "redis")!r}))
        print(json.dumps([pg.pid, rd.pid]), flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    old_pg, old_redis = json.loads(out.stdout)
    assert running(old_pg) and running(old_redis)

    with start_postgres(tmp_path / "pg", fast=True) as pg, start_redis(tmp_path / "redis") as rd:
        assert not running(old_pg) and not running(old_redis)
        with psycopg.connect(libpq_url(pg.url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(rd.url).ping()


def test_stale_postmaster_pid_is_removed(tmp_path):
    start_postgres(tmp_path / "pg", fast=True).stop()
    # After a power cut the pid in postmaster.pid may belong to another process by now (here: us),
    # which PostgreSQL alone would take for a running server.
    (tmp_path / "pg" / "postmaster.pid").write_text(f"{os.getpid()}\n")
    with start_postgres(tmp_path / "pg", fast=True) as pg:
        with psycopg.connect(libpq_url(pg.url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_data_dir_in_use_is_refused(tmp_path):
    with start_redis(tmp_path / "redis"):
        with pytest.raises(RuntimeError, match="in use"):
            start_redis(tmp_path / "redis")


# --- ServiceProcess ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_a_service_is_waited_on_by_its_log_and_stopped_with_its_whole_group(tmp_path):
    # The child ignores SIGTERM and outlives its leader: stop() must still leave nothing behind.
    script = '(trap "" TERM; exec sleep 300) & echo "child $!"; echo ready; wait'
    service = ServiceProcess(["sh", "-c", script], dict(os.environ), "grouped", tmp_path / "grouped.log")
    service.wait_for("ready", timeout=10)
    child = int(service.log().split("child ", 1)[1].split()[0])
    assert running(child) and os.getpgid(child) == service.pid  # own session, one group
    assert os.getsid(service.pid) == service.pid
    assert service.stop(timeout=5) == -signal.SIGTERM
    assert wait_gone(child, 5), "the group's leftover was not killed"


@pytest.mark.unit
def test_a_service_that_dies_while_awaited_reports_its_log(tmp_path):
    service = ServiceProcess(["sh", "-c", "echo starting; echo broken config >&2; exit 3"], dict(os.environ),
                             "broken", tmp_path / "broken.log")
    with pytest.raises(ServiceDied, match=r"broken \(pid \d+\) exited with code 3") as failed:
        service.wait_for("ready", timeout=10)
    assert "starting\nbroken config" in str(failed.value) and str(tmp_path / "broken.log") in str(failed.value)
    slow = ServiceProcess(["sleep", "30"], dict(os.environ), "slow")  # a temporary log file
    try:
        with pytest.raises(TimeoutError, match="slow did not log 'ready' within 0 s"):
            slow.wait_for("ready", timeout=0.2)
        assert slow.log_path.exists() and slow.log() == ""
    finally:
        slow.stop(timeout=5)
        slow.log_path.unlink()


@pytest.mark.unit
def test_a_service_with_die_with_parent_ends_when_its_supervisor_is_killed(tmp_path):
    supervisor = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from agentruns.embedded.processes import ServiceProcess
        service = ServiceProcess(["sleep", "300"], dict(os.environ), "orphan", Path({str(tmp_path / "o.log")!r}),
                                 die_with_parent=True)
        print(service.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", supervisor], capture_output=True, text=True, timeout=30)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert wait_gone(int(out.stdout), 5), "the service outlived its SIGKILLed supervisor"
