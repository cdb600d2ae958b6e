"""`agentruns dev`: the whole service on this machine (embedded PostgreSQL and Redis, API, worker, beat).

State lives in one folder (`.agentruns/` by default) and is reused on the next start: the database,
the secret key (0600 file), the `workspace/` the `local` device runs in, and the service logs.
API, worker and beat are children of this process, each in its own session: a Ctrl-C in the terminal
reaches only this supervisor, which then stops them in order (api, beat, worker, Redis, PostgreSQL).

Only click and the standard library are imported at the top: `agentruns --help` lists this command.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from agentruns.cli_common import own_sigint
from agentruns.cli_dev_sample import SAMPLE_SCRIPT, sample_run

if TYPE_CHECKING:
    from agentruns.client import Client
    from agentruns.embedded import EmbeddedServer
    from agentruns.embedded.processes import ServiceProcess

TENANT = "dev"
DEV_GRACE_SECONDS = "5"  # in-flight runs at Ctrl-C; production's default is 30 s, too long for a dev loop
STOP_TIMEOUTS = {"api": 10.0, "beat": 10.0, "worker": 15.0}  # also the stop order: no new runs first
READY_LINES = {"worker": "ready.", "beat": "beat: Starting"}  # the API is ready when /healthz answers
HINTS = """\
  curl -s "$AGENTRUNS_API_URL/api/v1/agent-runs" -H "Authorization: Bearer $AGENTRUNS_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"prompt": "hello", "sandbox_id": "local", "provider": "custom", "command": "cat; ls"}'
  agentruns sandbox prompt local --provider custom --runtime-command "cat; ls" -- hello"""


@dataclass
class Stack:
    """What `agentruns dev` started, in start order: the embedded servers, then the services."""

    servers: list[EmbeddedServer] = field(default_factory=list)
    services: list[ServiceProcess] = field(default_factory=list)

    def check(self) -> None:
        """Raise ServiceDied if a service or an embedded server is gone."""
        from agentruns.embedded.processes import ServiceDied, alive

        for service in self.services:
            service.check()
        for server in self.servers:
            if not alive(server.pid):
                raise ServiceDied(f"{server.name} (pid {server.pid}) is gone; see its log {server.log_path}")

    def shutdown(self) -> None:
        """Stop api, beat, worker (SIGTERM, SIGKILL after a timeout), then Redis and PostgreSQL; print timings."""
        if not self.services and not self.servers:
            return
        click.echo("stopping...")
        started, took = time.monotonic(), []
        grace = float(os.environ.get("AGENTRUNS_SHUTDOWN_GRACE_SECONDS") or DEV_GRACE_SECONDS)
        for service in sorted(self.services, key=lambda s: list(STOP_TIMEOUTS).index(s.name)):
            t = time.monotonic()
            service.stop(STOP_TIMEOUTS[service.name] + (grace if service.name == "worker" else 0))
            took.append(f"{service.name} {time.monotonic() - t:.1f}")
        for server in reversed(self.servers):
            t = time.monotonic()
            try:
                server.stop()
            except Exception as exc:  # keep going: the other server must still be stopped
                click.secho(f"could not stop {server.name}: {exc}", fg="red", err=True)
            took.append(f"{server.name} {time.monotonic() - t:.1f}")
        click.echo(f"stopped in {time.monotonic() - started:.1f} s ({', '.join(took)})")


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=".agentruns",
              show_default=True, help="State folder (database, secret key, workspace, logs); reused next time.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="API port; when the default is taken a free port is used instead.")
@click.option("--pg-port", type=click.IntRange(1, 65535), help="PostgreSQL port (default: a free one).")
@click.option("--redis-port", type=click.IntRange(1, 65535), help="Redis port (default: a free one).")
@click.option("--no-sample", is_flag=True, help="Skip the sample run.")
@click.option("--once", is_flag=True, help="Stop after the sample run; exit 0 iff it succeeded.")
@click.pass_context
def dev(ctx: click.Context, data_dir: Path, port: int, pg_port: int | None, redis_port: int | None,
        no_sample: bool, once: bool) -> None:
    """Run the whole service on this machine, then a sample run.

    Starts embedded PostgreSQL and Redis (no system install), the API, a worker and beat; creates an
    API key and a `local` device whose runs execute as you in DATA_DIR/workspace; prints how to reach
    them. Ctrl-C stops everything. Needs the embedded servers: pip install 'agentruns[embedded]'.
    """
    import logging

    from agentruns.client_errors import AgentrunsError
    from agentruns.embedded.processes import ServiceDied, free_port, port_free

    own_sigint()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not port_free(port):
        if ctx.get_parameter_source("port") != ParameterSource.DEFAULT:
            raise click.ClickException(f"port {port} on 127.0.0.1 is already in use")
        free = free_port()
        click.echo(f"port {port} is in use; the API will listen on {free} instead (or pass --port)")
        port = free
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM takes Ctrl-C's orderly path
    stack = Stack()
    client: Client | None = None
    code = 0
    try:
        client = _start(data_dir.resolve(), port, pg_port, redis_port, stack)
        ok = no_sample or sample_run(client, stack.check)
        code = 0 if ok else 1
        if not once:
            click.secho("\nRunning. Ctrl-C to stop.", bold=True)
            while True:
                stack.check()
                time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\ninterrupted")
        code = 130 if once else 0
    except ServiceDied as exc:
        click.secho(f"\n{exc}", fg="red", err=True)
        code = 1
    except (RuntimeError, OSError, AgentrunsError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        # A second Ctrl-C must not abandon the shutdown halfway; every step below has a timeout.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if client is not None:  # gunicorn's graceful stop would wait for its idle keep-alive connection
            client.close()
        stack.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ctx.exit(code)


def _start(data_dir: Path, port: int, pg_port: int | None, redis_port: int | None, stack: Stack) -> Client:
    """Start servers and services (into `stack` as it goes), create the key and the device; an SDK client."""
    import shutil

    from agentruns.client import Client
    from agentruns.client_errors import Conflict
    from agentruns.embedded import start_postgres, start_redis
    from agentruns.embedded.processes import ServiceProcess

    # The server's modules first: on a client-only install this fails before the data dir is made.
    from core import crypto, migrate  # noqa: F401
    from core.device_networks import EVERYWHERE

    started = time.monotonic()
    click.echo(f"{'reusing' if (data_dir / 'postgres' / 'PG_VERSION').exists() else 'creating'} {data_dir}")
    workspace, logs = data_dir / "workspace", data_dir / "logs"
    for d in (workspace, logs):
        d.mkdir(parents=True, exist_ok=True)
    secret = _secret_key(data_dir / "secret_key")
    # Inherited by the servers, services and runs: leftover processes can be found by it.
    os.environ["AGENTRUNS_DEV_DIR"] = str(data_dir)
    os.environ.setdefault("AGENTRUNS_SHUTDOWN_GRACE_SECONDS", DEV_GRACE_SECONDS)

    t = time.monotonic()
    stack.servers.append(pg := start_postgres(data_dir / "postgres", pg_port))
    stack.servers.append(redis := start_redis(data_dir / "redis", redis_port))
    click.echo(f"PostgreSQL and Redis up in {time.monotonic() - t:.1f} s")
    t = time.monotonic()
    key = _migrate_and_create_key(pg.url)
    click.echo(f"database migrated, API key created in {time.monotonic() - t:.1f} s")

    # One user on their own machine: the `local` device (runs in ./.agentruns/workspace) is the point.
    # It runs anything as that user already, so ssh devices may point anywhere too (a container on
    # localhost:2222), unless the user's own AGENTRUNS_DEVICE_NETWORKS says otherwise.
    env = {**os.environ, "DATABASE_URL": pg.url, "REDIS_URL": redis.url, "AGENTRUNS_SECRET_KEY": secret,
           "PYTHONUNBUFFERED": "1", "AGENTRUNS_ALLOW_LOCAL_DEVICES": "1",
           "AGENTRUNS_DEVICE_NETWORKS": os.environ.get("AGENTRUNS_DEVICE_NETWORKS") or EVERYWHERE}
    beside = Path(sys.executable).with_name("agentruns")  # this installation's script (venv, pipx)
    exe = str(beside) if beside.exists() else (shutil.which("agentruns") or sys.argv[0])
    for name, args in [("api", ["--bind", f"127.0.0.1:{port}", "--workers", "1"]),
                       ("worker", ["--concurrency", "8", "--hostname", "dev@%h"]),
                       ("beat", ["--schedule", str(data_dir / "beat-schedule")])]:
        stack.services.append(ServiceProcess([exe, name, *args], env, name, logs / f"{name}.log",
                                             die_with_parent=True))  # a SIGKILLed supervisor leaves no services
    _wait_ready(stack, port, timeout=90)

    api = f"http://127.0.0.1:{port}"
    client = Client(api, key, timeout=10)
    fields = {"kind": "sandbox", "driver": "local", "default_cwd": str(workspace)}
    try:
        client.devices.create(id="local", **fields)
    except Conflict:  # made by an earlier start: point it at this workspace (the folder may have moved)
        client.devices.update("local", **fields)
    (workspace / "sample.sh").write_text(SAMPLE_SCRIPT)

    click.secho(f"\nagentruns dev is up ({time.monotonic() - started:.1f} s)", fg="green", bold=True)
    click.echo(f"  console    {api}/   (sign in with the API key)\n"
               f"  API URL    {api}\n  API key    {key}   (tenant {TENANT!r}; a new key on every start)\n"
               f"  device     local (sandbox, local driver), runs in {workspace}\n"
               f"  database   {pg.url}\n  broker     {redis.url}")
    for name, pid, log in [(s.name, s.pid, s.log_path) for s in stack.services] + \
            [(x.name.lower(), x.pid, x.log_path) for x in stack.servers]:
        click.echo(f"  {name:<10} pid {pid:<7} log {log}")
    click.echo(f"\nIn another terminal:\n  export AGENTRUNS_API_URL={api}\n  export AGENTRUNS_API_KEY={key}\n{HINTS}")
    return client


def _migrate_and_create_key(database_url: str) -> str:
    """Bring the schema to head and create an API key for the dev tenant; the raw key."""
    from core import db
    from core.migrate import upgrade
    from core.services.keys import create_key

    upgrade(database_url)
    db.init(database_url)
    with db.session() as s:
        _, key, _ = create_key(s, TENANT)
    db.engine().dispose()  # the supervisor needs no connections from here on
    return key


def _secret_key(path: Path) -> str:
    """Read the stored AGENTRUNS_SECRET_KEY, or create it (0600) on first use."""
    from core.crypto import new_secret_key

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as f:
            f.write(new_secret_key() + "\n")
    return path.read_text().strip()


def _wait_ready(stack: Stack, port: int, timeout: float) -> None:
    """Wait until the API answers /healthz and the others have logged their ready line (they start together)."""
    from agentruns.embedded.processes import answers_http

    deadline = time.monotonic() + timeout
    for service in stack.services:
        left = max(0.1, deadline - time.monotonic())
        if service.name in READY_LINES:
            service.wait_for(READY_LINES[service.name], left)
        else:
            service.wait_until(lambda: answers_http(port, "/healthz"), "answer /healthz", left)
