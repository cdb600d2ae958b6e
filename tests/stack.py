"""Start the real service processes (API, Celery worker, beat) for end-to-end tests and benchmarks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from core.config import Settings

AGENTRUNS = str(Path(sys.executable).with_name("agentruns"))


def service_env(settings: Settings, **overrides) -> dict[str, str]:
    """Environment for a service process with these settings (plus overrides like LEASE_SECONDS=3)."""
    env = dict(os.environ)
    env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
               AGENTRUNS_SECRET_KEY=settings.secret_key, PYTHONUNBUFFERED="1",
               AGENTRUNS_ALLOW_LOCAL_DEVICES="1" if settings.allow_local_devices else "0")
    for name, value in overrides.items():
        env[f"AGENTRUNS_{name.upper()}"] = str(value)
    return env


class Proc:
    """A service subprocess whose combined output goes to a log file we can read and wait on."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str):
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"agentruns-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not print {text!r} in {timeout}s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (gunicorn and Celery have children)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def start_worker(env: dict[str, str], concurrency: int = 50, name: str = "worker",
                 metrics_port: int | None = None) -> Proc:
    argv = [AGENTRUNS, "worker", "--concurrency", str(concurrency), "--hostname", f"{name}@%h:{time.time_ns()}"]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    proc = Proc(argv, env, name)
    proc.wait_for("ready.", timeout=60)
    return proc


def start_beat(env: dict[str, str]) -> Proc:
    proc = Proc([AGENTRUNS, "beat"], env, "beat")
    proc.wait_for("beat: Starting", timeout=60)
    return proc


def start_api(env: dict[str, str], port: int, workers: int = 1, name: str = "api") -> Proc:
    proc = Proc([AGENTRUNS, "api", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)], env, name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.proc.poll() is not None:
            raise RuntimeError(f"api exited:\n{proc.log()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"api did not answer:\n{proc.log()[-3000:]}")
