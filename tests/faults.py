"""A stack of its own for fault tests: durable PostgreSQL and Redis that can be killed and restarted
on their ports, API, workers and beat as real processes, devices on sshd servers that can be cut,
and a load generator that records every answer the API gave.

Nothing here is shared with the session's servers: a fault must not reach other tests.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agentruns.embedded import EmbeddedServer, start_postgres, start_redis
from agentruns.embedded.processes import ServiceProcess
from core.config import Settings
from core.crypto import new_secret_key
from core.device_networks import LOOPBACK
from tests.sshd import SshServer, free_port
from tests.stack import AGENTRUNS, service_env, start_api, start_beat, start_worker

# A run's command: record its token once when it starts and once when it ends; the process is named
# after the token so a leftover one can be found on the device.
COMMAND = 'read -r t; echo "$t" >> starts; sh -c "sleep $1" "fault-$t" "$SECONDS_TO_RUN"; echo "$t" >> ends'


@dataclass
class FaultStack:
    """The servers and services of one fault test; `stop()` ends them all."""

    root: Path
    overrides: dict
    settings: Settings = field(init=False)  # set by start(), once the servers are up
    pg: EmbeddedServer | None = None
    redis: EmbeddedServer | None = None
    api: ServiceProcess | None = None
    api_url: str = ""
    beat: ServiceProcess | None = None
    workers: dict[str, ServiceProcess] = field(default_factory=dict)
    killed: list[ServiceProcess] = field(default_factory=list)  # by the test, on purpose
    key: str = ""

    @property
    def env(self) -> dict[str, str]:
        return service_env(self.settings, **self.overrides)

    def start(self) -> FaultStack:
        """PostgreSQL (durable commits: a restart must not lose what was acknowledged), Redis, migrations,
        a key, the API, beat and two workers."""
        self.pg = start_postgres(self.root / "pg", fast=False)
        self.redis = start_redis(self.root / "redis")
        self.settings = Settings(database_url=self.pg.url, redis_url=self.redis.url, secret_key=new_secret_key(),
                                 allow_local_devices=False, device_networks=LOOPBACK)  # the sshd is on 127.0.0.1
        from core.migrate import upgrade

        upgrade(self.pg.url)
        out = subprocess.run([AGENTRUNS, "keys", "create", "--tenant", "faults", "--json"], env=self.env,
                             capture_output=True, text=True, check=True)
        self.key = json.loads(out.stdout)["key"]
        port = free_port()
        self.api = start_api(self.env, port, workers=2, name="fault-api")
        self.api_url = f"http://127.0.0.1:{port}"
        self.beat = start_beat(self.env)
        for name in ("w1", "w2"):
            self.start_worker(name)
        return self

    def start_worker(self, name: str) -> None:
        self.workers[name] = start_worker(self.env, concurrency=20, name=f"fault-{name}")

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> ServiceProcess:
        proc = self.workers.pop(name)
        self.killed.append(proc)
        proc.kill(sig)
        return proc

    def restart_redis(self, down_seconds: float) -> None:
        """Redis dies (SIGKILL) and comes back empty on its port."""
        assert self.redis is not None
        port = self.redis.port
        os.kill(self.redis.pid, signal.SIGKILL)
        self.redis.stop()  # it is gone: this only releases its data dir
        time.sleep(down_seconds)
        self.redis = start_redis(self.root / f"redis-{uuid.uuid4().hex[:6]}", port=port)

    def restart_postgres(self, down_seconds: float) -> None:
        """PostgreSQL stops at once (SIGQUIT: immediate shutdown, as a crash) and starts again."""
        assert self.pg is not None
        port, data_dir = self.pg.port, self.pg.data_dir
        os.kill(self.pg.pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while _alive(self.pg.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pg.stop()  # it is gone: this only releases its data dir for the restart
        time.sleep(down_seconds)
        self.pg = start_postgres(data_dir, port=port, fast=False)

    def add_device(self, device_id: str, sshd: SshServer, workdir: str, slots: int) -> None:
        body = {"id": device_id, "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
                "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key,
                "default_cwd": workdir, "max_concurrent_runs": slots}
        resp = httpx.post(f"{self.api_url}/api/v1/devices", json=body, headers=self.auth, timeout=30)
        assert resp.status_code == 201, resp.text

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def alive_services(self) -> dict[str, bool]:
        procs = {"api": self.api, "beat": self.beat, **self.workers}
        return {name: p is not None and p.proc.poll() is None for name, p in procs.items()}

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.beat, self.api]:
            if proc is not None:
                proc.stop(timeout=10)
        for server in (self.redis, self.pg):
            if server is not None:
                server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@dataclass
class Load:
    """Creates runs at a steady pace, each with its Idempotency-Key, retrying what may be retried
    (connection errors, 503, 409 key in use) under the same key; records every status answered."""

    stack: FaultStack
    devices: list[str]
    seconds_per_run: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    accepted: dict[str, str] = field(default_factory=dict)  # token -> run id
    statuses: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # tokens the API never accepted
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, count: int, every: float) -> threading.Thread:
        thread = threading.Thread(target=self._post_all, args=(count, every), daemon=True, name="fault-load")
        thread.start()
        return thread

    def _post_all(self, count: int, every: float) -> None:
        with httpx.Client(base_url=self.stack.api_url, headers=self.stack.auth, timeout=20) as http:
            for i in range(count):
                started = time.monotonic()
                token = uuid.uuid4().hex[:12]
                body = {"prompt": token, "computer_id": self.devices[i % len(self.devices)], "provider": "custom",
                        "command": COMMAND, "env": {"SECONDS_TO_RUN": str(self.seconds_per_run[i % 4])},
                        "metadata": {"token": token}}
                self._post(http, token, body, key=f"fault-{token}")
                time.sleep(max(0.0, every - (time.monotonic() - started)))

    def _post(self, http: httpx.Client, token: str, body: dict, key: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                resp = http.post("/api/v1/agent-runs", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                time.sleep(0.3)
                continue
            self.statuses.append(resp.status_code)
            if resp.status_code in (200, 201):
                self.accepted[token] = resp.json()["data"]["id"]
                return
            if resp.status_code in (503, 409):
                time.sleep(float(resp.headers.get("Retry-After", "0.5")))
                continue
            break  # anything else is an answer: recorded, not retried
        self.refused.append(token)


def lines(sshd: SshServer, path: str) -> list[str]:
    """The lines of a file on the device (empty when it does not exist)."""
    out = sshd.run_as_user(f"cat {path} 2>/dev/null || true")
    return [line for line in out.stdout.splitlines() if line]
