"""Client commands of `agentruns`: `sandbox prompt`, `computer prompt`, plus `runs`, `devices` and `mcp`.

They talk to the REST API through the SDK (agentruns.client), never to the database, so they work from
any machine that can reach the server.
"""
from __future__ import annotations

import json
import sys
import uuid

import click

from agentruns.vocabulary import PROVIDERS, TERMINAL

EXIT_CODES = {"succeeded": 0, "failed": 1, "canceled": 130}


def report_error(exc) -> None:
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

    def invoke(self, ctx: click.Context):
        from agentruns.client_errors import AgentrunsError

        try:
            return super().invoke(ctx)
        except AgentrunsError as exc:
            report_error(exc)
            ctx.exit(1)


class ClientGroup(click.Group):
    """A group whose subcommands are ClientCommands."""

    command_class = ClientCommand


def _store(ctx: click.Context, param: click.Parameter, value):
    ctx.meta[f"agentruns.{param.name}"] = value
    return value


def api_options(fn):
    """Add --api-url and --api-key (or AGENTRUNS_API_URL / AGENTRUNS_API_KEY) to a command."""
    fn = click.option("--api-key", envvar="AGENTRUNS_API_KEY", show_envvar=True, expose_value=False,
                      callback=_store, help="API key (Bearer).")(fn)
    fn = click.option("--api-url", envvar="AGENTRUNS_API_URL", show_envvar=True, expose_value=False,
                      default="http://127.0.0.1:8000", show_default=True, callback=_store,
                      help="Base URL of the agentruns API.")(fn)
    return fn


def get_client():
    """The SDK client for the current command's --api-url/--api-key."""
    from agentruns.client import Client

    ctx = click.get_current_context()
    key = ctx.meta.get("agentruns.api_key")
    if not key:
        raise click.UsageError("no API key: pass --api-key or set AGENTRUNS_API_KEY", ctx)
    client = Client(base_url=ctx.meta.get("agentruns.api_url"), api_key=key)
    ctx.call_on_close(client.close)
    return client


def parse_pairs(ctx, param, values) -> dict[str, str]:
    """KEY=VALUE options into a dict (a usage error names the bad one)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx, param)
        out[key] = value
    return out


def echo_json(data) -> None:
    """Pretty JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _read_prompt(words: tuple[str, ...]) -> str:
    if words and words != ("-",):
        return " ".join(words)
    stdin = sys.stdin  # click.get_text_stream is deprecated (Click 9); CliRunner swaps sys.stdin too
    if not words and stdin.isatty():
        raise click.UsageError('missing PROMPT (give it after "--", or "-" to read it from stdin)')
    return stdin.read()


def _prompt_command(kind: str) -> click.Command:
    @click.command("prompt", cls=ClientCommand)
    @click.argument("device_id", metavar="ID")
    @click.argument("prompt", nargs=-1)
    @click.option("--provider", type=click.Choice(PROVIDERS), default="claude-code", show_default=True,
                  help="Agent CLI that runs the prompt.")
    @click.option("--runtime-command", "--command", "command", metavar="CMD",
                  help="Shell command for --provider custom (the prompt arrives on its stdin).")
    @click.option("--model", help="Provider-specific model override.")
    @click.option("--cwd", help="Absolute working directory on the device (default: the device's).")
    @click.option("--timeout", type=click.IntRange(1, 86400), help="Seconds before the run is killed (1800).")
    @click.option("--metadata", "-m", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
                  help="Metadata to store with the run (repeatable).")
    @click.option("--env", "-e", multiple=True, callback=parse_pairs, metavar="NAME=VALUE",
                  help="Extra environment variable for the run (repeatable; stored encrypted).")
    @click.option("--idempotency-key", help="Reuse to make a retried command return the same run "
                                            "(a new key is generated when absent).")
    @click.option("--no-wait", is_flag=True, help="Print the run id and return at once.")
    @click.option("--json", "as_json", is_flag=True, help="Print only the final run record as JSON.")
    @click.option("--cancel-on-interrupt", is_flag=True, help="Cancel the run on Ctrl-C without asking.")
    @api_options
    def prompt(device_id, prompt, provider, command, model, cwd, timeout, metadata, env, idempotency_key,
               no_wait, as_json, cancel_on_interrupt):
        """Run PROMPT on the device ID and stream its output.

        Exit status: 0 succeeded, 1 failed, 130 canceled or interrupted, 2 usage error.
        """
        text = _read_prompt(prompt)
        client = get_client()
        key = idempotency_key or f"cli-{uuid.uuid4()}"
        run = client.agent_runs.create(prompt=text, target_id=device_id, target_kind=kind, provider=provider,
                                       command=command, model=model, cwd=cwd, timeout=timeout,
                                       metadata=metadata or None, env=env or None, idempotency_key=key)
        if no_wait:
            echo_json(run) if as_json else click.echo(run["id"])
            return
        if not as_json:
            click.echo(f"run {run['id']} {run['status']} on {kind} {device_id} (idempotency key {key})", err=True)
        from agentruns.cli_follow import follow_run

        final = follow_run(client, run, quiet=as_json, cancel_on_interrupt=cancel_on_interrupt)
        if final is None:  # interrupted and left running
            sys.exit(130)
        if as_json:
            echo_json(final)
        sys.exit(EXIT_CODES.get(final["status"], 1))

    return prompt


def _kind_group(kind: str) -> click.Group:
    group = ClientGroup(kind, help=f"Work with a {kind} (a device of kind {kind}).")
    group.add_command(_prompt_command(kind))
    return group


def register(main: click.Group) -> None:
    """Attach the client commands to the `agentruns` group."""
    from agentruns.cli_resources import devices, runs

    main.add_command(_kind_group("sandbox"))
    main.add_command(_kind_group("computer"))
    main.add_command(runs)
    main.add_command(devices)

    @main.command("mcp")
    @api_options
    def mcp() -> None:
        """Serve the agent_run MCP tools over stdio (for AI assistants)."""
        from agentruns.mcp_server import serve

        ctx = click.get_current_context()
        if not ctx.meta.get("agentruns.api_key"):
            raise click.UsageError("no API key: pass --api-key or set AGENTRUNS_API_KEY", ctx)
        serve(ctx.meta.get("agentruns.api_url"), ctx.meta.get("agentruns.api_key"))

