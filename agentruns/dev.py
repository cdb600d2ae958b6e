"""`agentruns dev`: the whole service on this machine (embedded PostgreSQL and Redis, API, worker, beat).

State lives in one folder (`.agentruns/` by default) and is reused on the next start: the database,
the secret key (0600 file), the `workspace/` the `local` device runs in, and the service logs.
API, worker and beat are children of this process, each in its own session: a Ctrl-C in the terminal
reaches only this supervisor, which then stops them in order (api, beat, worker, Redis, PostgreSQL).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
from click.core import ParameterSource

from agentruns.embedded import _alive, _free_port, _port_free
from agentruns.vocabulary import TERMINAL

TENANT = "dev"
DEV_GRACE_SECONDS = "5"  # in-flight runs at Ctrl-C; production's default is 30 s, too long for a dev loop
STOP_TIMEOUTS = {"api": 10.0, "beat": 10.0, "worker": 15.0}  # also the stop order: no new runs first
SAMPLE_PROMPT = "Say hello, show me this prompt, and leave a file in the workspace."
# A script file rather than an inline command: the custom provider runs the command under the user's
# $SHELL, and `sh ./sample.sh` works the same from bash, zsh or fish.
SAMPLE_SCRIPT = """\
# The agentruns dev sample run; `agentruns dev` rewrites this file on every start.
echo "Hello from run $AGENTRUNS_RUN_ID in $(pwd)"
echo "The prompt on stdin was: $(cat)"
for i in 1 2 3 4; do echo "working... step $i/4"; sleep 0.5; done
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $AGENTRUNS_RUN_ID" >> hello.txt
echo "appended a line to $(pwd)/hello.txt"
echo "(a line on stderr)" >&2
"""
CURL = """\
  curl -s "$AGENTRUNS_API_URL/api/v1/agent-runs" -H "Authorization: Bearer $AGENTRUNS_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"prompt": "hello", "sandbox_id": "local", "provider": "custom", "command": "cat; ls"}'"""


class ChildDied(Exception):
    """A service process or embedded server exited while it should be running."""


@dataclass
class Child:
    """A service process (api, worker or beat) with its log file."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    ready_text: str | None  # log line that means "up"; None: the API, checked over HTTP

    def check(self) -> None:
        """Raise ChildDied, with the tail of the log, if the process has exited."""
        if self.proc.poll() is not None:
            lines = self.log_path.read_text(errors="replace").splitlines()[-30:]
            raise ChildDied(f"{self.name} (pid {self.proc.pid}) exited with code {self.proc.returncode}; "
                            f"last lines of {self.log_path}:\n" + "\n".join(lines))

    def stop(self, timeout: float) -> None:
        """SIGTERM the process group, SIGKILL after `timeout`; also sweeps leftover group members."""
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
        if self.proc.poll() is None:
            click.echo(f"{self.name} did not stop in {timeout:.0f} s: killing it", err=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # also what is left of the group, e.g. a gunicorn worker
        self.proc.wait()


def register(main: click.Group) -> None:
    """Add `agentruns dev` to the CLI."""
    main.add_command(dev)


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
    """Run everything on this machine with embedded PostgreSQL and Redis, then a sample run."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not _port_free(port):
        if ctx.get_parameter_source("port") != ParameterSource.DEFAULT:
            raise click.ClickException(f"port {port} on 127.0.0.1 is already in use")
        free = _free_port()
        click.echo(f"port {port} is in use; the API will listen on {free} instead (or pass --port)")
        port = free
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM takes Ctrl-C's orderly path
    servers: list = []
    children: list[Child] = []
    code = 0
    try:
        api, key = _start(data_dir.resolve(), port, pg_port, redis_port, servers, children)
        ok = no_sample or _sample_run(api, key, children, servers)
        code = 0 if ok else 1
        if not once:
            click.secho("\nRunning. Ctrl-C to stop.", bold=True)
            while True:
                _check(children, servers)
                time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\ninterrupted")
        code = 130 if once else 0
    except ChildDied as exc:
        click.secho(f"\n{exc}", fg="red", err=True)
        code = 1
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        # A second Ctrl-C must not abandon the shutdown halfway; every step below has a timeout.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shutdown(children, servers)
    ctx.exit(code)


def _start(data_dir: Path, port: int, pg_port, redis_port, servers: list, children: list[Child]) -> tuple[str, str]:
    """Start servers and services (appending to the lists as it goes), create key and device; (url, key)."""
    from agentruns.embedded import start_postgres, start_redis

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
    servers.append(pg := start_postgres(data_dir / "postgres", pg_port))
    servers.append(redis := start_redis(data_dir / "redis", redis_port))
    click.echo(f"PostgreSQL and Redis up in {time.monotonic() - t:.1f} s")

    from core import db
    from core.migrate import upgrade
    from core.services.keys import create_key

    t = time.monotonic()
    upgrade(pg.url)
    db.init(pg.url)
    with db.session() as s:
        _, key, _ = create_key(s, TENANT)
    db.engine().dispose()  # the supervisor needs no connections from here on
    click.echo(f"database migrated, API key created in {time.monotonic() - t:.1f} s")

    # One user on their own machine: the `local` device (runs in ./.agentruns/workspace) is the point.
    env = {**os.environ, "DATABASE_URL": pg.url, "REDIS_URL": redis.url, "AGENTRUNS_SECRET_KEY": secret,
           "PYTHONUNBUFFERED": "1", "AGENTRUNS_ALLOW_LOCAL_DEVICES": "1"}
    beside = Path(sys.executable).with_name("agentruns")  # this installation's script (venv, pipx)
    exe = str(beside) if beside.exists() else (shutil.which("agentruns") or sys.argv[0])
    for name, args, ready in [
            ("api", ["--bind", f"127.0.0.1:{port}", "--workers", "1"], None),
            ("worker", ["--concurrency", "8", "--hostname", "dev@%h"], "ready."),
            ("beat", ["--schedule", str(data_dir / "beat-schedule")], "beat: Starting")]:
        children.append(_spawn(name, [exe, name, *args], env, logs / f"{name}.log", ready))
    api, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    _wait_ready(children, api, timeout=90)
    # The `local` device, created or pointed at this workspace (the folder may have moved).
    fields = {"kind": "sandbox", "driver": "local", "default_cwd": str(workspace)}
    r = httpx.post(f"{api}/api/v1/devices", json={"id": "local", **fields}, headers=headers, timeout=10)
    _ok(httpx.patch(f"{api}/api/v1/devices/local", json=fields, headers=headers, timeout=10)
        if r.status_code == 409 else r)
    (workspace / "sample.sh").write_text(SAMPLE_SCRIPT)

    click.secho(f"\nagentruns dev is up ({time.monotonic() - started:.1f} s)", fg="green", bold=True)
    click.echo(f"  API URL    {api}\n  API key    {key}   (tenant {TENANT!r}; a new key on every start)\n"
               f"  device     local (sandbox, local driver), runs in {workspace}\n"
               f"  database   {pg.url}\n  broker     {redis.url}")
    for name, pid, log in [(c.name, c.proc.pid, c.log_path) for c in children] + \
            [(x.name.lower(), x.pid, x.log_path) for x in servers]:
        click.echo(f"  {name:<10} pid {pid:<7} log {log}")
    click.echo(f"\nIn another terminal:\n  export AGENTRUNS_API_URL={api}\n  export AGENTRUNS_API_KEY={key}\n{CURL}")
    if "sandbox" in click.get_current_context().find_root().command.commands:  # the client CLI is installed
        click.echo('  agentruns sandbox prompt local --provider custom --runtime-command "cat; ls" -- hello')
    return api, key


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


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, ready: str | None) -> Child:
    """Start a service in its own session, output to its log, SIGTERMed if this supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls into it

    def die_with_parent() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a SIGKILLed supervisor leaves no services behind

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)
    return Child(name, proc, log_path, ready)


def _wait_ready(children: list[Child], api: str, timeout: float) -> None:
    """Wait until the API answers /healthz and the others have logged their ready line."""
    pending, deadline = list(children), time.monotonic() + timeout
    while pending:
        for c in list(pending):
            c.check()
            if c.ready_text is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                        pending.remove(c)
            elif c.ready_text in c.log_path.read_text(errors="replace"):
                pending.remove(c)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout:.0f} s: "
                               + ", ".join(f"{c.name} (log {c.log_path})" for c in pending))
        time.sleep(0.1)


def _ok(r: httpx.Response) -> dict:
    """The JSON body, or a ClickException with the server's error."""
    if r.status_code >= 400:
        raise click.ClickException(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:500]}")
    return r.json()


def _sample_run(api: str, key: str, children: list[Child], servers: list) -> bool:
    """Create the sample run, print its live output from the SSE stream, then its outcome."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {"prompt": SAMPLE_PROMPT, "sandbox_id": "local", "provider": "custom", "command": "sh ./sample.sh",
            "timeout": 60}
    run = _ok(httpx.post(f"{api}/api/v1/agent-runs", json=body, headers=headers, timeout=10))["data"]
    click.secho(f"\nSample run {run['id']} (provider custom, command `sh ./sample.sh`), live output:", bold=True)
    _follow(f"{api}/api/v1/agent-runs/{run['id']}/events", headers, children, servers, time.monotonic() + 120)
    run = _ok(httpx.get(f"{api}/api/v1/agent-runs/{run['id']}", headers=headers, timeout=10))["data"]
    ok = run["status"] == "succeeded"
    error = f", error {run['error']['code']}: {run['error']['message']}" if run.get("error") else ""
    click.secho(f"Sample run {run['status']} (exit code {run['exit_code']}){error}", fg="green" if ok else "red")
    return ok


def _follow(url: str, headers: dict, children: list[Child], servers: list, deadline: float) -> None:
    """Print events until the terminal status; reconnects (Last-Event-ID) so dead services are noticed."""
    last, at_line_start = 0, True
    while time.monotonic() < deadline:
        _check(children, servers)
        resume = {"Last-Event-ID": str(last)} if last else {}
        try:
            # A short read timeout: a quiet stream is re-opened, and the services checked, every 2 s.
            with httpx.stream("GET", url, headers={**headers, **resume, "Accept": "text/event-stream"},
                              timeout=httpx.Timeout(10, read=2)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _ok(resp)
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    last = event["seq"]
                    if event["type"] == "note":
                        continue
                    if event["type"] != "status":
                        at_line_start = _echo_chunk(event["data"], event["type"] == "stderr", at_line_start)
                        continue
                    click.secho(("" if at_line_start else "\n") + f"  [{event['data']['status']}]", fg="cyan")
                    at_line_start = True
                    if event["data"]["status"] in TERMINAL:
                        return
        except httpx.TransportError:  # a timeout or a dead API: the check above tells which
            time.sleep(0.1)
    raise RuntimeError("the sample run did not finish in time")


def _echo_chunk(text: str, stderr: bool, at_line_start: bool) -> bool:
    """Print an output chunk with a gutter at each line start; returns whether it ended a line."""
    gutter = click.style("  ! ", fg="red") if stderr else click.style("  | ", dim=True)
    for piece in text.splitlines(keepends=True):
        click.echo((gutter if at_line_start else "") + piece, nl=False)
        at_line_start = piece.endswith("\n")
    return at_line_start


def _check(children: list[Child], servers: list) -> None:
    """Raise ChildDied if a service or an embedded server is gone."""
    for c in children:
        c.check()
    for server in servers:
        if not _alive(server.pid):
            raise ChildDied(f"{server.name} (pid {server.pid}) is gone; see its log {server.log_path}")


def _shutdown(children: list[Child], servers: list) -> None:
    """Stop api, beat, worker (SIGTERM, SIGKILL after a timeout), then Redis and PostgreSQL; print timings."""
    if not children and not servers:
        return
    click.echo("stopping...")
    started, took = time.monotonic(), []
    grace = float(os.environ.get("AGENTRUNS_SHUTDOWN_GRACE_SECONDS") or DEV_GRACE_SECONDS)
    for c in sorted(children, key=lambda c: list(STOP_TIMEOUTS).index(c.name)):
        t = time.monotonic()
        c.stop(STOP_TIMEOUTS[c.name] + (grace if c.name == "worker" else 0))
        took.append(f"{c.name} {time.monotonic() - t:.1f}")
    for server in reversed(servers):
        t = time.monotonic()
        try:
            server.stop()
        except Exception as exc:  # keep going: the other server must still be stopped
            click.secho(f"could not stop {server.name}: {exc}", fg="red", err=True)
        took.append(f"{server.name} {time.monotonic() - t:.1f}")
    click.echo(f"stopped in {time.monotonic() - started:.1f} s ({', '.join(took)})")

