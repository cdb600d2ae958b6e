"""`agentruns status`: the fleet at a glance for an operator (GET /api/v1/admin/stats with an operator
key): a table of pools (backlog, oldest queued run, runs in flight, devices, live workers, free slots)
and one of devices (the busiest first)."""
from __future__ import annotations

from datetime import UTC, datetime

import click

from agentruns.cli_common import ClientCommand, api_options, echo_json, get_client

NEEDS_OPERATOR = ("`agentruns status` needs an operator key, and this one is a tenant key. Make one where the "
                  "database is reachable: agentruns keys create --tenant ops --role operator --name status")


def age(seconds: float | None) -> str:
    """45s, 3m05s, 2h04m, 3d02h; "-" for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _ago(at: str | None, now: datetime) -> str:
    if at is None:
        return "-"
    return age((now - datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds()) + " ago"


def _known(value) -> str:
    return "?" if value is None else str(value)


def _failures(device: dict, now: datetime) -> str:
    since = device["first_failure_at"]
    return _known(device["connect_failures"]) + (f" since {_ago(since, now)}" if since else "")


def table(rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; numbers line up at the left like the rest."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def show(stats: dict, limit: int, now: datetime | None = None) -> None:
    """The answer of GET /admin/stats as the two tables, and a warning per pool with queued runs and
    no live worker."""
    now = now or datetime.now(UTC)
    pools = stats["pools"]
    rows = [["POOL", "QUEUED", "OLDEST", "RUNNING", "DEVICES", "SLOTS", "WORKERS", "FREE SLOTS"]]
    rows += [[p["pool"], str(p["queued_runs"]), age(p["oldest_queued_seconds"]), str(p["runs_in_flight"]),
              str(p["devices"]), str(p["device_slots"]), _known(p["live_workers"]), _known(p["free_worker_slots"])]
             for p in pools]
    if pools:
        table(rows)
    else:
        click.echo("no pools: no device and no live worker")
    for p in pools:
        if p["queued_runs"] and p["live_workers"] == 0:
            click.echo(f"! pool {p['pool']}: {p['queued_runs']} queued, no live worker serves it "
                       f"(agentruns worker --pool {p['pool']})")
    if stats["workers"] is None:
        click.echo("(live workers unknown: the API could not read Redis)")
    devices = stats["devices"]
    shown = devices if limit == 0 else devices[:limit]
    click.echo("")
    if not devices:
        click.echo("no devices")
        return
    rows = [["TENANT", "DEVICE", "POOL", "QUEUED", "OLDEST", "RUNNING", "MAX", "LAST CONNECT", "FAILURES"]]
    rows += [[d["tenant"], d["id"], d["pool"], str(d["queued_runs"]), age(d["oldest_queued_seconds"]),
              str(d["runs_in_flight"]), str(d["max_concurrent_runs"]), _ago(d["last_connected_at"], now),
              _failures(d, now)] for d in shown]
    table(rows)
    if len(shown) < len(devices):
        click.echo(f"... {len(devices) - len(shown)} more devices (--limit 0 shows all)")


@click.command("status", cls=ClientCommand)
@click.option("--pool", help="Only this pool (its devices and workers).")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="Devices to list, the busiest first (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer ({pools, devices, workers}) as JSON.")
@api_options
def status(pool: str | None, limit: int, as_json: bool) -> None:
    """The fleet at a glance for an operator: pools and devices.

    Pools: queued runs, the oldest one's age, runs running, devices and their slots, live workers and
    their free slots (a pool with queued runs and no live worker is flagged). Devices: the busiest
    first, with their last successful connect and failed connects in a row.

    Needs an operator key (AGENTRUNS_API_KEY). Every figure is live: queued and running runs from
    PostgreSQL, workers from their heartbeats (15 s), device connects from the workers' records.
    """
    from agentruns.client_errors import PermissionDenied

    try:
        stats = get_client().admin.stats(pool)
    except PermissionDenied:
        raise click.ClickException(NEEDS_OPERATOR) from None
    if as_json:
        echo_json(stats)
    else:
        show(stats, limit)
