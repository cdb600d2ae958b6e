"""What the commands share: --api-url/--api-key, the SDK client, error reporting, small formatters, and
SIGINT handling.

Imports only click and the vocabulary: the SDK (and with it httpx) loads when a command first talks to
the API, so `agentruns --help` stays fast.
"""
from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agentruns.vocabulary import CANCELED, FAILED, SUCCEEDED

if TYPE_CHECKING:
    from agentruns.client import Client
    from agentruns.client_errors import AgentrunsError

# A command that follows a run exits with the run's outcome; 130 is the shell's "ended by Ctrl-C".
EXIT_CODES = {SUCCEEDED: 0, FAILED: 1, CANCELED: 130}

F = TypeVar("F", bound=Callable[..., Any])


def report_error(exc: AgentrunsError) -> None:
    """Print an SDK error the way a user wants to read it: message, then code, status, request id, fields."""
    click.echo(f"error: {exc.message}", err=True)
    facts = [f"code: {exc.code}"]
    if exc.status is not None:
        facts.append(f"HTTP {exc.status}")
    if exc.request_id:
        facts.append(f"request id: {exc.request_id}")
    click.echo("  " + " · ".join(facts), err=True)
    for name, messages in sorted((exc.details.get("fields") or {}).items()):
        click.echo(f"  {name}: {', '.join(map(str, messages))}", err=True)


class ClientCommand(click.Command):
    """A command whose SDK errors end as a message on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an AgentrunsError becomes a report and exit status 1."""
        from agentruns.client_errors import AgentrunsError

        try:
            return super().invoke(ctx)
        except AgentrunsError as exc:
            report_error(exc)
            ctx.exit(1)


class ClientGroup(click.Group):
    """A group whose subcommands are ClientCommands."""

    command_class = ClientCommand


def _store(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    ctx.meta[f"agentruns.{param.name}"] = value
    return value


def api_options(fn: F) -> F:
    """Add --api-url and --api-key (or AGENTRUNS_API_URL / AGENTRUNS_API_KEY) to a command."""
    fn = click.option("--api-key", envvar="AGENTRUNS_API_KEY", show_envvar=True, expose_value=False,
                      callback=_store, help="API key (Bearer).")(fn)
    fn = click.option("--api-url", envvar="AGENTRUNS_API_URL", show_envvar=True, expose_value=False,
                      default="http://127.0.0.1:8000", show_default=True, callback=_store,
                      help="Base URL of the agentruns API.")(fn)
    return fn


def api_settings() -> tuple[str, str]:
    """The current command's (API URL, API key); a usage error when no key was given."""
    ctx = click.get_current_context()
    key = ctx.meta.get("agentruns.api_key")
    if not key:
        raise click.UsageError("no API key: pass --api-key or set AGENTRUNS_API_KEY", ctx)
    return ctx.meta["agentruns.api_url"], key


def get_client() -> Client:
    """The SDK client for the current command's --api-url/--api-key, closed when the command ends."""
    from agentruns.client import Client

    url, key = api_settings()
    client = Client(base_url=url, api_key=key)
    click.get_current_context().call_on_close(client.close)
    return client


def parse_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE options into a dict (a usage error names the bad one)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx, param)
        out[key] = value
    return out


def echo_json(data: Any) -> None:
    """Pretty JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def own_sigint() -> None:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt, whatever the parent process did.

    A shell that starts `agentruns ... &` from a script starts it with SIGINT ignored, and Python then
    installs no handler: Ctrl-C or `kill -INT` would do nothing, and every child would inherit the
    ignore. A handler of our own also resets to the default in the programs we start.
    """
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread (a command invoked from a test's thread): leave it
        pass
