"""The embedded PostgreSQL and Redis used by `agentruns dev` and the test suite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import redis

from agentruns.embedded import start_postgres, start_redis


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
