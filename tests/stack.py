"""Start the real service processes (API, Celery worker, beat) for end-to-end tests and benchmarks.

The processes are agentruns.embedded.processes.ServiceProcess, the class `agentruns dev` supervises
its services with: own session, output in a log file, waits on a log line, stops the whole group.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agentruns.embedded.processes import ServiceProcess, answers_http
from core.config import Settings
from core.device_networks import LOOPBACK

AGENTRUNS = str(Path(sys.executable).with_name("agentruns"))
Proc = ServiceProcess  # the name the tests and benchmarks know it by


def service_env(settings: Settings, **overrides) -> dict[str, str]:
    """Environment for a service process with these settings (plus overrides like LEASE_SECONDS=3).

    Devices may point at loopback (the test sshd) unless the settings list their own networks or the
    caller overrides DEVICE_NETWORKS ("" for the default allow-list, which refuses loopback)."""
    env = dict(os.environ)
    env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
               AGENTRUNS_SECRET_KEY=settings.secret_key, PYTHONUNBUFFERED="1",
               AGENTRUNS_ALLOW_LOCAL_DEVICES="1" if settings.allow_local_devices else "0",
               AGENTRUNS_DEVICE_NETWORKS=settings.device_networks or LOOPBACK, AGENTRUNS_POOLS=settings.pools)
    for name, value in overrides.items():
        env[f"AGENTRUNS_{name.upper()}"] = str(value)
    return env


def ignoring_sigint(argv: list[str]) -> list[str]:
    """ARGV started the way `cmd &` in a shell script starts it: with SIGINT ignored, which it inherits.

    Tests that interrupt a command start it so: it must handle Ctrl-C whatever its parent did.
    """
    return ["/bin/sh", "-c", 'trap "" INT; exec "$0" "$@"', *argv]


def start_worker(env: dict[str, str], concurrency: int = 50, name: str = "worker",
                 metrics_port: int | None = None, options: tuple[str, ...] = ()) -> ServiceProcess:
    """`agentruns worker` (with `options`, e.g. ("--pool", "gpu") or ("--no-webhooks",)), once it has
    logged that it is ready."""
    argv = [AGENTRUNS, "worker", "--concurrency", str(concurrency), "--hostname", f"{name}@%h:{time.time_ns()}"]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    argv += list(options)
    proc = ServiceProcess(argv, env, name)
    return _ready(proc, lambda: proc.wait_for("ready.", timeout=60))


def start_beat(env: dict[str, str]) -> ServiceProcess:
    """`agentruns beat`, once it has started."""
    proc = ServiceProcess([AGENTRUNS, "beat"], env, "beat")
    return _ready(proc, lambda: proc.wait_for("beat: Starting", timeout=60))


def start_api(env: dict[str, str], port: int, workers: int = 1, name: str = "api") -> ServiceProcess:
    """`agentruns api` on 127.0.0.1:PORT, once /healthz answers."""
    proc = ServiceProcess([AGENTRUNS, "api", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)], env, name)
    return _ready(proc, lambda: proc.wait_until(lambda: answers_http(port, "/healthz"), "answer /healthz", 60))


def _ready(proc: ServiceProcess, wait: Callable[[], None]) -> ServiceProcess:
    """`proc` once `wait` returns; stopped rather than leaked when it raises (it died, or never got ready)."""
    try:
        wait()
    except BaseException:
        proc.stop(timeout=5)
        raise
    return proc
