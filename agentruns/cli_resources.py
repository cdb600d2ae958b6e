"""`agentruns runs ...` and `agentruns devices ...`: list, inspect and manage through the REST API."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from agentruns.cli_common import EXIT_CODES, ClientGroup, api_options, echo_json, get_client, parse_pairs
from agentruns.vocabulary import KINDS, PROVIDERS, STATUSES


def _one_line(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.group(cls=ClientGroup)
def runs() -> None:
    """Agent runs: list, get, cancel, logs.

    Start a run with `agentruns sandbox prompt` or `agentruns computer prompt`.
    """


@runs.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs in this status.")
@click.option("--provider", type=click.Choice(PROVIDERS), help="Only runs of this agent CLI.")
@click.option("--target-id", metavar="ID", help="Only runs on this device (either kind).")
@click.option("--sandbox-id", metavar="ID", help="Only runs on this sandbox.")
@click.option("--computer-id", metavar="ID", help="Only runs on this computer.")
@click.option("--metadata", "-m", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Exact match on a metadata key (repeatable).")
@click.option("--created-after", metavar="RFC3339", help="Only runs created after, e.g. 2026-11-29T10:00:00Z.")
@click.option("--created-before", metavar="RFC3339", help="Only runs created before this time.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Page size.")
@click.option("--cursor", help="Continue from a previous page's next_cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Follow next_cursor to the last page.")
@click.option("--json", "as_json", is_flag=True, help='Print {"data": [...], "next_cursor": ...}.')
@api_options
def runs_list(metadata, limit, cursor, all_pages, as_json, **filters) -> None:
    """List runs, newest first."""
    client = get_client()
    page: dict[str, Any]
    if all_pages:
        page = {"data": list(client.agent_runs.list(limit=limit, metadata=metadata, cursor=cursor, **filters)),
                "next_cursor": None}
    else:
        page = client.agent_runs.page(limit=limit, metadata=metadata, cursor=cursor, **filters)
    if as_json:
        echo_json(page)
        return
    rows = [[r["id"], r["status"], r["provider"], f"{r['target_kind']}:{r['target_id']}", r["created_at"],
             _one_line(r.get("prompt"), 40)] for r in page["data"]]
    _table(rows, ["ID", "STATUS", "PROVIDER", "TARGET", "CREATED", "PROMPT"])
    if page.get("next_cursor"):
        click.echo(f"more: --cursor {page['next_cursor']}", err=True)


@runs.command("get")
@click.argument("run_id", metavar="ID")
@click.option("--wait", type=click.IntRange(0, 600), default=0, metavar="SECONDS",
              help="Wait up to SECONDS (max 600) for the run to end before showing it.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@api_options
def runs_get(run_id, wait, as_json) -> None:
    """Show one run (its output last)."""
    run = get_client().agent_runs.get(run_id, wait=wait or None)
    if as_json:
        echo_json(run)
        return
    for name in ("id", "status", "provider", "model", "target_kind", "target_id", "cwd", "timeout", "exit_code",
                 "created_at", "started_at", "finished_at"):
        if run.get(name) is not None:
            click.echo(f"{name + ':':13} {run[name]}")
    if run.get("error"):
        click.echo(f"{'error:':13} {run['error'].get('code')}: {run['error'].get('message')}")
    if run.get("metadata"):
        click.echo(f"{'metadata:':13} {', '.join(f'{k}={v}' for k, v in run['metadata'].items())}")
    click.echo(f"{'prompt:':13} {_one_line(run.get('prompt'), 200)}")
    if run.get("output"):
        click.echo("")
        click.echo(run["output"], nl=not run["output"].endswith("\n"))


@runs.command("cancel")
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@api_options
def runs_cancel(run_id, as_json) -> None:
    """Cancel a run: a queued one ends now, a running one is killed by its worker."""
    run = get_client().agent_runs.cancel(run_id)
    if as_json:
        echo_json(run)
    elif run["status"] == "canceled":
        click.echo(f"run {run_id} canceled")
    else:
        click.echo(f"run {run_id} {run['status']}: cancel requested")


@runs.command("logs")
@click.argument("run_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Stream until the run ends; exit with its status.")
@click.option("--after-seq", type=click.IntRange(0), default=0, help="Only events after this sequence number.")
@api_options
def runs_logs(run_id, follow, after_seq) -> None:
    """Print a run's output log (stdout to stdout, stderr and status changes to stderr)."""
    client = get_client()
    events = client.agent_runs.stream(run_id, after_seq) if follow else client.agent_runs.events(run_id, after_seq)
    last_status = None
    for event in events:
        if event["type"] == "stdout":
            sys.stdout.write(event["data"])
            sys.stdout.flush()
        elif event["type"] == "stderr":
            sys.stderr.write(event["data"])
            sys.stderr.flush()
        elif event["type"] == "status":
            last_status = (event["data"] or {}).get("status")
            click.echo(f"· {last_status} {event.get('at') or ''}".rstrip(), err=True)
    if follow:
        sys.exit(EXIT_CODES.get(last_status or client.agent_runs.get(run_id)["status"], 1))


@click.group(cls=ClientGroup)
def devices() -> None:
    """Devices (sandboxes and computers): add, list, show, rm, test.

    A device is a machine runs execute on, reached over SSH (or, for `agentruns dev`, this machine).
    """


@devices.command("add")
@click.argument("device_id", metavar="[ID]", required=False)
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--driver", type=click.Choice(("ssh", "local")), default="ssh", show_default=True,
              help="local: run on the worker's own host; only where the server sets AGENTRUNS_ALLOW_LOCAL_DEVICES.")
@click.option("--name", help="Display name.")
@click.option("--host", help="SSH host name or address.")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port (server default: 22).")
@click.option("--username", "--user", "username", help="SSH login user.")
@click.option("--private-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key to log in with (sent once, stored encrypted).")
@click.option("--ask-password", is_flag=True, help="Prompt for an SSH password (hidden).")
@click.option("--host-key", help='Pinned host key, a known_hosts line ("host ssh-ed25519 AAAA...").')
@click.option("--host-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the pinned host key line from a file.")
@click.option("--trust-on-first-use", is_flag=True, default=None, help="Pin the first host key seen.")
@click.option("--label", "-l", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Label to store with the device (repeatable).")
@click.option("--max-concurrent-runs", type=click.IntRange(1, 1000), help="Runs at once on this device.")
@click.option("--default-cwd", help="Working directory for runs that name none.")
@click.option("--env", "-e", multiple=True, callback=parse_pairs, metavar="NAME=VALUE",
              help="Secret environment for every run on the device (repeatable; write-only).")
@click.option("--login-shell/--no-login-shell", default=None,
              help="Run commands in a login shell, so the user's profile sets PATH (server default: on).")
@click.option("--json", "as_json", is_flag=True, help="Print the device record as JSON.")
@api_options
def devices_add(device_id, private_key_file, ask_password, host_key_file, label, env, as_json, **fields) -> None:
    """Register a device (ID is generated when omitted)."""
    body = {k: v for k, v in fields.items() if v is not None}
    body.update(id=device_id, labels=label or None, env=env or None)
    if private_key_file:
        body["private_key"] = private_key_file.read_text()
    if host_key_file:
        body["host_key"] = host_key_file.read_text().strip()
    if ask_password:
        body["password"] = click.prompt("SSH password", hide_input=True, err=True)
    device = get_client().devices.create(**body)
    if as_json:
        echo_json(device)
    else:
        click.echo(f"device {device['id']} added ({device['kind']}, {device['driver']})")


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help='Print {"data": [...]} as JSON.')
@api_options
def devices_list(as_json) -> None:
    """List the tenant's devices."""
    items = get_client().devices.list()
    if as_json:
        echo_json({"data": items})
        return
    rows = [[d["id"], d["kind"], d["driver"], f"{d.get('username') or ''}@{d['host']}:{d.get('port') or 22}"
             if d.get("host") else "-", d.get("name") or ""] for d in items]
    _table(rows, ["ID", "KIND", "DRIVER", "ADDRESS", "NAME"])


@devices.command("show")
@click.argument("device_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the device record as JSON.")
@api_options
def devices_show(device_id, as_json) -> None:
    """Show one device (secrets are never shown, only whether they are set)."""
    device = get_client().devices.get(device_id)
    if as_json:
        echo_json(device)
        return
    for name, value in device.items():
        if value not in (None, {}, []):
            click.echo(f"{name + ':':20} {value}")


@devices.command("rm")
@click.argument("device_id", metavar="ID")
@api_options
def devices_rm(device_id) -> None:
    """Delete a device (refused while it has runs in flight)."""
    get_client().devices.delete(device_id)
    click.echo(f"device {device_id} deleted")


@devices.command("test")
@click.argument("device_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help='Print {"ok", "latency_ms", "host_key", "error"} as JSON.')
@api_options
def devices_test(device_id, as_json) -> None:
    """Connect to the device and run `true`; report latency and host key. Exit 1 when it fails."""
    result = get_client().devices.test(device_id)
    if as_json:
        echo_json(result)
    elif result.get("ok"):
        click.echo(f"ok: {device_id} answered in {result.get('latency_ms') or 0:.1f} ms")
        if result.get("host_key"):
            click.echo(f"host key: {result['host_key']}")
    else:
        err = result.get("error") or {}
        click.echo(f"failed: {err.get('code', 'error')}: {err.get('message', 'no details')}", err=True)
    if not result.get("ok"):
        sys.exit(1)
