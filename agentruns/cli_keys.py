"""`agentruns api-keys ...`: the tenant's API keys through the REST API (the operator's `agentruns keys`
works on the database instead, and is the only way to make an operator key)."""
from __future__ import annotations

import click

from agentruns.cli_common import ClientGroup, api_options, echo_json, get_client


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


def _show_new(key: dict, what: str) -> None:
    click.echo(f"{what} {key['prefix']} ({key['role']}, expires {_when(key['expires_at'])})", err=True)
    click.echo(key["key"])
    click.echo("the key is shown only once: store it now", err=True)


@click.group("api-keys", cls=ClientGroup)
def api_keys() -> None:
    """Your tenant's API keys: list, create, revoke, rotate.

    A key is shown once, when it is created or rotated; the service keeps only a hash.
    """


@api_keys.command("list")
@click.option("--json", "as_json", is_flag=True, help='Print {"data": [...]} as JSON.')
@api_options
def keys_list(as_json: bool) -> None:
    """List the tenant's keys, newest first (`*` marks the key in use)."""
    items = get_client().keys.list()
    if as_json:
        echo_json({"data": items})
        return
    rows = [["PREFIX", "NAME", "ROLE", "STATE", "CREATED", "LAST USED", "EXPIRES"]]
    rows += [[("* " if k["current"] else "") + k["prefix"], k["name"] or "", k["role"], k["state"],
              _when(k["created_at"]), _when(k["last_used_at"]), _when(k["expires_at"])] for k in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@api_keys.command("create")
@click.option("--name", help="What the key is for.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="Expire after N days (default: never).")
@click.option("--json", "as_json", is_flag=True, help="Print the new key's record (with `key`) as JSON.")
@api_options
def keys_create(name: str | None, expires_in_days: int | None, as_json: bool) -> None:
    """Create a tenant key; the key goes to stdout, once."""
    key = get_client().keys.create(name=name, expires_in_days=expires_in_days)
    if as_json:
        echo_json(key)
    else:
        _show_new(key, "created")


@api_keys.command("revoke")
@click.argument("prefix")
@api_options
def keys_revoke(prefix: str) -> None:
    """Revoke the key with this PREFIX: the API refuses it from the next request on."""
    get_client().keys.revoke(prefix)
    click.echo(f"revoked {prefix}")


@api_keys.command("rotate")
@click.argument("prefix")
@click.option("--json", "as_json", is_flag=True, help="Print the new key's record (with `key`) as JSON.")
@api_options
def keys_rotate(prefix: str, as_json: bool) -> None:
    """Replace the key with this PREFIX by a new one (same name, role, expiry); the old one is revoked."""
    key = get_client().keys.rotate(prefix)
    if as_json:
        echo_json(key)
    else:
        _show_new(key, f"{prefix} revoked; new key")
