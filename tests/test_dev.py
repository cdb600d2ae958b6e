"""`agentruns dev` as a real subprocess: sample run with live output, reuse of its state, clean stops."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from agentruns.embedded.processes import alive, free_port
from tests.stack import AGENTRUNS, ignoring_sigint

pytestmark = pytest.mark.e2e


@pytest.fixture
def data_dir():
    """A state folder outside pytest's tmp_path: concurrent pytest sessions prune old tmp_path roots."""
    root = Path(tempfile.mkdtemp(prefix="agentruns-dev-test-"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


class Dev:
    """`agentruns dev ...` with its stdout and stderr collected line by line with arrival times.

    Started as from a script's `cmd &` (SIGINT ignored): it must stop on Ctrl-C all the same.
    """

    def __init__(self, data_dir: Path, *args: str):
        self.lines: list[tuple[float, str]] = []
        self.err: list[str] = []
        self.proc = subprocess.Popen(ignoring_sigint([AGENTRUNS, "dev", "--data-dir", str(data_dir), *args]),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "NO_COLOR": "1"})
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
            else:
                self.err.append(line)

    @property
    def out(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert self.proc.poll() is None, f"dev exited with {self.proc.returncode}:\n{self.out}\n{''.join(self.err)}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout}s:\n{self.out}\n{''.join(self.err)}"
            time.sleep(0.05)

    def close(self) -> None:
        """After a failed assertion: stop it the orderly way so its servers do not outlive the test."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(5)
        return rc

    def seen_at(self, text: str) -> float:
        return next(t for t, line in self.lines if text in line)

    def number(self, pattern: str) -> float:
        found = re.search(pattern, self.out)
        assert found, f"no {pattern!r} in:\n{self.out}"
        return float(found.group(1))


def marked_processes(data_dir: Path) -> list[str]:
    """Live processes carrying this dev folder's AGENTRUNS_DEV_DIR (every descendant inherits it)."""
    marker = f"AGENTRUNS_DEV_DIR={data_dir}".encode()
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker in (p / "environ").read_bytes().split(b"\0"):
                cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{p.name}: {cmdline}")
        except OSError:
            continue  # gone meanwhile
    return found


def printed_pids(dev: Dev) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"^  (\w+)\s+pid (\d+)", dev.out, re.M)}


def assert_nothing_left(data_dir: Path, dev: Dev) -> None:
    """No process of this dev folder remains: by pid, by inherited marker, by command line, by port."""
    pids = printed_pids(dev)
    assert set(pids) == {"api", "worker", "beat", "postgresql", "redis"}, dev.out
    for name, pid in pids.items():
        assert not alive(pid), f"{name} (pid {pid}) still runs"
    # PostgreSQL's and Redis's children rewrite their environ for the process title: hence also the ports.
    assert marked_processes(data_dir) == []
    pgrep = subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True).stdout
    assert not pgrep.strip(), pgrep
    for port in re.findall(r"127\.0\.0\.1:(\d+)", dev.out):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", int(port)))


def run_once(data_dir: Path) -> Dev:
    dev = Dev(data_dir, "--once", "--port", str(free_port()))
    try:
        rc = dev.wait(90)
    finally:
        dev.close()
    assert rc == 0, f"{dev.out}\n{''.join(dev.err)}"
    return dev


def test_once_runs_the_sample_live_then_reuses_its_state(data_dir):
    cold = run_once(data_dir)
    assert "creating " + str(data_dir) in cold.out
    key = re.search(r"API key\s+(ark_live_\S+)", cold.out).group(1)
    assert f"export AGENTRUNS_API_KEY={key}" in cold.out and "export AGENTRUNS_API_URL=http://127.0.0.1:" in cold.out
    assert "The prompt on stdin was: Say hello" in cold.out and "working... step 4/4" in cold.out
    assert "Sample run succeeded (exit code 0)" in cold.out
    # The services log to files, not to the terminal.
    assert "ready." in (data_dir / "logs" / "worker.log").read_text() and "ready." not in cold.out
    assert "Booting worker" in (data_dir / "logs" / "api.log").read_text() and "Booting" not in "".join(cold.err)
    # Live: the steps arrive as the command prints them (0.5 s apart), not all at the end.
    assert cold.seen_at("step 4/4") - cold.seen_at("step 1/4") > 1.0
    assert cold.seen_at("[running]") < cold.seen_at("step 1/4") < cold.seen_at("[succeeded]")
    assert_nothing_left(data_dir, cold)
    secret = data_dir / "secret_key"
    assert secret.stat().st_mode & 0o777 == 0o600
    first_secret, pg_version = secret.read_text(), (data_dir / "postgres" / "PG_VERSION").stat().st_mtime_ns

    warm = run_once(data_dir)
    assert "reusing " + str(data_dir) in warm.out and "Sample run succeeded" in warm.out
    assert secret.read_text() == first_secret
    assert (data_dir / "postgres" / "PG_VERSION").stat().st_mtime_ns == pg_version  # no second initdb
    # Starting an existing cluster skips initdb: the servers come up faster the second time.
    servers_up = r"PostgreSQL and Redis up in ([\d.]+) s"
    assert warm.number(servers_up) < cold.number(servers_up)
    up = r"is up \(([\d.]+) s"
    print(f"\ncold: up in {cold.number(up)} s; warm: up in {warm.number(up)} s")
    assert_nothing_left(data_dir, warm)
    # The workspace and the database kept the first session's work.
    assert len((data_dir / "workspace" / "hello.txt").read_text().splitlines()) == 2
    from agentruns.embedded import start_postgres

    with start_postgres(data_dir / "postgres") as pg, \
            psycopg.connect(pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
        count = conn.execute("SELECT count(*) FROM runs JOIN tenants t ON t.id = runs.tenant_id "
                             "WHERE t.name = 'dev' AND runs.status = 'succeeded'").fetchone()[0]
    assert count == 2


def test_ctrl_c_stops_everything(data_dir):
    port = free_port()
    dev = Dev(data_dir, "--no-sample", "--port", str(port))
    try:
        dev.wait_for("Ctrl-C to stop")
        key = re.search(r"API key\s+(ark_live_\S+)", dev.out).group(1)
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/devices/local", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["data"]["default_cwd"] == str(data_dir / "workspace")
        # The leftover checks below can see what they look for.
        running = "\n".join(marked_processes(data_dir))
        assert all(f"agentruns {name} " in running for name in ("worker", "beat")), running
        assert "gunicorn app:create_app()" in running, running  # `agentruns api` execs gunicorn
        assert "bin/postgres -D" in running, running
        assert all(alive(pid) for pid in printed_pids(dev).values())
        dev.proc.send_signal(signal.SIGINT)
        assert dev.wait(20) == 0, f"{dev.out}\n{''.join(dev.err)}"
    finally:
        dev.close()
    assert "stopped in" in dev.out
    assert_nothing_left(data_dir, dev)


def test_a_dying_service_stops_everything_with_its_log(data_dir):
    dev = Dev(data_dir, "--no-sample", "--port", str(free_port()))
    try:
        dev.wait_for("Ctrl-C to stop")
        worker_pid = int(re.search(r"worker\s+pid (\d+)", dev.out).group(1))
        os.kill(worker_pid, signal.SIGKILL)
        assert dev.wait(20) == 1
    finally:
        dev.close()
    err = "".join(dev.err)
    assert f"worker (pid {worker_pid}) exited with code -9" in err and "worker.log" in err and "ready." in err
    assert_nothing_left(data_dir, dev)


def test_a_taken_port_given_explicitly_is_an_error(data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        dev = Dev(data_dir, "--once", "--port", str(s.getsockname()[1]))
        assert dev.wait(30) == 1
    assert "already in use" in "".join(dev.err)
    assert not data_dir.exists()
