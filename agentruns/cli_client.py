"""`agentruns sandbox prompt` and `agentruns computer prompt`: run a prompt on a device and follow it live,
and `agentruns mcp`.

They talk to the REST API through the SDK (agentruns.client), never to the database, so they work from
any machine that can reach the server.
"""
from __future__ import annotations

import sys
import uuid

import click

from agentruns.cli_common import (
    EXIT_CODES,
    ClientCommand,
    ClientGroup,
    api_options,
    api_settings,
    echo_json,
    get_client,
    parse_pairs,
)
from agentruns.vocabulary import DEFAULT_PROVIDER, KINDS, PROVIDERS


def _read_prompt(words: tuple[str, ...]) -> str:
    if words and words != ("-",):
        return " ".join(words)
    stdin = sys.stdin  # click.get_text_stream is deprecated (Click 9); CliRunner swaps sys.stdin too
    if not words and stdin.isatty():
        raise click.UsageError('missing PROMPT (give it after "--", or "-" to read it from stdin)')
    return stdin.read()


PROMPT_HELP = """Run PROMPT on the {kind} ID and stream its output.

PROMPT is the words after ID (after "--" when they start with a dash), or "-" to read it from stdin:

\b
  agentruns {kind} prompt ID -- fix the failing tests
  git diff | agentruns {kind} prompt ID --provider codex -

Ctrl-C asks whether to cancel the run on a terminal (see --cancel-on-interrupt); elsewhere the run goes on.

Exit status: 0 succeeded, 1 failed, 130 canceled or interrupted, 2 usage error.
"""


def _prompt_command(kind: str) -> click.Command:
    @click.command("prompt", cls=ClientCommand, help=PROMPT_HELP.format(kind=kind))
    @click.argument("device_id", metavar="ID")
    @click.argument("prompt", nargs=-1)
    @click.option("--provider", type=click.Choice(PROVIDERS), default=DEFAULT_PROVIDER, show_default=True,
                  help="Agent CLI that runs the prompt.")
    @click.option("--runtime-command", "--command", "command", metavar="CMD",
                  help="Shell command for --provider custom (the prompt arrives on its stdin).")
    @click.option("--model", help="Provider-specific model override.")
    @click.option("--cwd", help="Absolute working directory on the device (default: the device's).")
    @click.option("--timeout", type=click.IntRange(1, 86400),
                  help="Seconds before the run is killed (server default: 1800).")
    @click.option("--metadata", "-m", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
                  help="Metadata to store with the run (repeatable).")
    @click.option("--env", "-e", multiple=True, callback=parse_pairs, metavar="NAME=VALUE",
                  help="Extra environment variable for the run (repeatable; stored encrypted).")
    @click.option("--webhook-url", metavar="URL",
                  help="Also POST this run's events (queued, started, and how it ended) to URL, signed with the "
                       "per-run secret: see `agentruns webhooks rotate-secret per-run`.")
    @click.option("--idempotency-key", help="Reuse to make a retried command return the same run "
                                            "(a new key is generated when absent).")
    @click.option("--no-wait", is_flag=True, help="Print the run id and return at once.")
    @click.option("--json", "as_json", is_flag=True, help="Print only the final run record as JSON.")
    @click.option("--cancel-on-interrupt", is_flag=True, help="Cancel the run on Ctrl-C without asking.")
    @api_options
    def prompt(device_id, prompt, provider, command, model, cwd, timeout, metadata, env, webhook_url,
               idempotency_key, no_wait, as_json, cancel_on_interrupt):
        text = _read_prompt(prompt)
        client = get_client()
        key = idempotency_key or f"cli-{uuid.uuid4()}"
        run = client.agent_runs.create(prompt=text, target_id=device_id, target_kind=kind, provider=provider,
                                       command=command, model=model, cwd=cwd, timeout=timeout,
                                       metadata=metadata or None, env=env or None, webhook_url=webhook_url,
                                       idempotency_key=key)
        page = f"{client.base_url.rstrip('/')}/runs/{run['id']}"  # the run in the web console
        if no_wait:
            echo_json(run) if as_json else click.echo(run["id"])
            if not as_json:
                click.echo(f"run {run['id']} · {page}", err=True)  # stdout stays the bare id, for scripts
            return
        if not as_json:
            click.echo(f"run {run['id']} {run['status']} on {kind} {device_id} · {page} (idempotency key {key})",
                       err=True)
        from agentruns.cli_follow import follow_run

        final = follow_run(client, run, quiet=as_json, cancel_on_interrupt=cancel_on_interrupt)
        if final is None:  # interrupted and left running
            sys.exit(130)
        if as_json:
            echo_json(final)
        sys.exit(EXIT_CODES.get(final["status"], 1))

    return prompt


def _kind_group(kind: str) -> click.Group:
    group = ClientGroup(kind, help=f"Run prompts on a {kind} (a device added with --kind {kind}).")
    group.add_command(_prompt_command(kind))
    return group


def kind_groups() -> list[click.Group]:
    """`agentruns sandbox` and `agentruns computer`, one group per device kind."""
    return [_kind_group(kind) for kind in KINDS]


@click.command()
@api_options
def mcp() -> None:
    """Serve the agent_run MCP tools over stdio (for AI assistants)."""
    from agentruns.mcp_server import serve

    serve(*api_settings())
