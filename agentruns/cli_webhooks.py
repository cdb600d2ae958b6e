"""`agentruns webhooks ...`: subscribe URLs to run events, rotate their secrets, inspect and resend deliveries."""
from __future__ import annotations

from typing import Any

import click

from agentruns.cli_common import ClientGroup, api_options, echo_json, get_client, parse_pairs
from agentruns.cli_resources import _one_line, _table
from agentruns.vocabulary import DELIVERY_STATES, PROVIDERS, WEBHOOK_ALL_EVENTS, WEBHOOK_EVENT_TYPES

EVENT_CHOICES = (*WEBHOOK_EVENT_TYPES, WEBHOOK_ALL_EVENTS)
PER_RUN = "per-run"
SECRET_NOTE = ("(the secret is shown only once: store it now)\n"
               "Receivers check each POST's Agentruns-Signature header with it, e.g. with\n"
               "agentruns.webhooks.verify(body, header, secret) in Python.")


@click.group(cls=ClientGroup)
def webhooks() -> None:
    """Webhooks: get a signed HTTP POST each time a run changes status.

    \b
    An endpoint subscribes a URL to run events (run.queued, run.started,
    run.succeeded, run.failed, run.canceled; run.* for all), optionally only
    for runs on one device, of one provider or with some metadata:
      agentruns webhooks create https://example.com/hook --event run.succeeded --event run.failed
    Its secret (whsec_...) is printed once, at create and rotate-secret; each
    POST carries an Agentruns-Signature header made with it, which a receiver
    checks with agentruns.webhooks.verify(body, header, secret). Failed
    deliveries are retried with backoff; `deliveries` shows them, `redeliver`
    sends one again.

    \b
    A run started with --webhook-url also sends its events to that URL, signed
    with the per-run endpoint's secret: `agentruns webhooks rotate-secret per-run`.
    """


def _filters_text(filters: dict | None) -> str:
    filters = filters or {}
    parts = [f"target={filters['target_id']}" if filters.get("target_id") else "",
             f"provider={filters['provider']}" if filters.get("provider") else "",
             *(f"{k}={v}" for k, v in (filters.get("metadata") or {}).items())]
    return " ".join(p for p in parts if p) or "-"


def _state(hook: dict) -> str:
    if not hook.get("enabled"):
        return "disabled"
    return "failing" if hook.get("failing_since") else "enabled"


def _show(hook: dict) -> None:
    """An endpoint as `name: value` lines (no secret)."""
    url = "(each run's own webhook_url)" if hook.get("per_run") else hook.get("url")
    lines: list[tuple[str, Any]] = [
        ("id", hook["id"]), ("url", url),
        ("events", ", ".join(hook.get("events") or []) or "-"), ("filters", _filters_text(hook.get("filters"))),
        ("state", _state(hook)), ("disabled reason", hook.get("disabled_reason")),
        ("failing since", hook.get("failing_since")), ("description", hook.get("description")),
        ("old secret until", hook.get("previous_secret_expires_at")), ("created", hook.get("created_at")),
        ("updated", hook.get("updated_at"))]
    for name, value in lines:
        if hook.get("per_run") and name in ("events", "filters"):
            continue  # the per-run endpoint signs runs' own webhook_url; it has no subscription
        if value not in (None, ""):
            click.echo(f"{name + ':':18} {value}")


def _show_secret(hook: dict) -> None:
    click.echo(f"{'secret:':18} {hook['secret']}")
    click.echo(SECRET_NOTE)


def _filters(target_id: str | None, provider: str | None, metadata: dict[str, str]) -> dict:
    return {k: v for k, v in (("target_id", target_id), ("provider", provider), ("metadata", metadata or None))
            if v is not None}


def _endpoint_options(fn: Any) -> Any:
    """The options create and update share."""
    for option in reversed((
        click.option("--event", "events", multiple=True, type=click.Choice(EVENT_CHOICES),
                     help=f"Event type to receive (repeatable; {WEBHOOK_ALL_EVENTS} is all of them)."),
        click.option("--target-id", metavar="ID", help="Only runs on this device."),
        click.option("--provider", type=click.Choice(PROVIDERS), help="Only runs of this agent CLI."),
        click.option("--metadata", "-m", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
                     help="Only runs whose metadata has KEY with this (string) value (repeatable)."),
        click.option("--description", "-d", help="A note for people (at most 500 characters)."),
    )):
        fn = option(fn)
    return fn


@webhooks.command("create")
@click.argument("url")
@_endpoint_options
@click.option("--disabled", is_flag=True, help="Create it disabled: nothing is sent until `update --enable`.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint record, secret included, as JSON.")
@api_options
def webhooks_create(url, events, target_id, provider, metadata, description, disabled, as_json) -> None:
    """Subscribe URL to run events (all of them unless --event is given).

    URL must be https, unless the server allows http (AGENTRUNS_WEBHOOK_ALLOW_HTTP); addresses inside the
    server's network are refused unless it allows them. The signing secret is printed once.
    """
    filters = _filters(target_id, provider, metadata)
    hook = get_client().webhooks.create(url, events=list(events) or None, filters=filters or None,
                                        description=description, enabled=False if disabled else None)
    if as_json:
        echo_json(hook)
        return
    click.echo(f"webhook {hook['id']} created")
    _show(hook)
    _show_secret(hook)


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True, help='Print {"data": [...]} as JSON.')
@api_options
def webhooks_list(as_json) -> None:
    """List the tenant's endpoints, oldest first (the per-run endpoint: `show per-run`)."""
    items = get_client().webhooks.list()
    if as_json:
        echo_json({"data": items})
        return
    rows = [[h["id"], _state(h), ",".join(h.get("events") or []), _filters_text(h.get("filters")),
             h.get("url") or "", _one_line(h.get("description"), 30)] for h in items]
    _table(rows, ["ID", "STATE", "EVENTS", "FILTERS", "URL", "DESCRIPTION"])


@webhooks.command("show")
@click.argument("webhook_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint record as JSON.")
@api_options
def webhooks_show(webhook_id, as_json) -> None:
    """Show one endpoint (ID `per-run`: the per-run endpoint). Secrets are never shown again."""
    hook = get_client().webhooks.get(webhook_id)
    if as_json:
        echo_json(hook)
    else:
        _show(hook)


@webhooks.command("update")
@click.argument("webhook_id", metavar="ID")
@click.option("--url", help="Send to this URL instead.")
@_endpoint_options
@click.option("--clear-filters", is_flag=True,
              help="Drop the current filters (the filter options given with it become the only ones).")
@click.option("--enable/--disable", "enabled", default=None,
              help="Start or stop sending. --enable also revives an endpoint the server disabled after it "
                   "failed for too long.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint record as JSON.")
@api_options
def webhooks_update(webhook_id, url, events, target_id, provider, metadata, description, clear_filters,
                    enabled, as_json) -> None:
    """Change an endpoint's URL, events, filters, description or state.

    Filter options are merged into the current filters (a new --metadata KEY replaces that key only);
    --clear-filters starts from none. Options not given are left as they are.
    """
    client = get_client()
    fields: dict[str, Any] = {k: v for k, v in (("url", url), ("description", description), ("enabled", enabled))
                              if v is not None}
    if events:
        fields["events"] = list(events)
    given = _filters(target_id, provider, metadata)
    if given or clear_filters:
        current = {} if clear_filters else client.webhooks.get(webhook_id).get("filters") or {}
        merged = {k: v for k, v in current.items() if v not in (None, {})}
        merged.update({k: v for k, v in given.items() if k != "metadata"})
        if "metadata" in given:
            merged["metadata"] = {**(merged.get("metadata") or {}), **given["metadata"]}
        fields["filters"] = merged
    if not fields:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    hook = client.webhooks.update(webhook_id, **fields)
    if as_json:
        echo_json(hook)
        return
    click.echo(f"webhook {hook['id']} updated")
    _show(hook)


@webhooks.command("delete")
@click.argument("webhook_id", metavar="ID")
@api_options
def webhooks_delete(webhook_id) -> None:
    """Delete an endpoint; its pending deliveries are dropped."""
    get_client().webhooks.delete(webhook_id)
    click.echo(f"webhook {webhook_id} deleted")


@webhooks.command("rotate-secret")
@click.argument("webhook_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint record, new secret included, as JSON.")
@api_options
def webhooks_rotate_secret(webhook_id, as_json) -> None:
    """Give an endpoint a new signing secret, printed once.

    The old secret keeps signing beside the new one for a grace period (a day by default), so receivers can
    switch without losing events. ID `per-run` rotates (or first creates) the secret that signs the events
    sent to runs' own --webhook-url.
    """
    hook = get_client().webhooks.rotate_secret(webhook_id)
    if as_json:
        echo_json(hook)
        return
    click.echo(f"webhook {hook['id']}: new secret")
    _show_secret(hook)
    if hook.get("previous_secret_expires_at"):
        click.echo(f"the previous secret also signs until {hook['previous_secret_expires_at']}")


def _last(delivery: dict) -> str:
    code, err = delivery.get("last_status_code"), delivery.get("last_error")
    text = f"HTTP {code}" if code is not None else ""
    if err:
        text = f"{text} {err}".strip()
    return _one_line(text, 40) or "-"


@webhooks.command("deliveries")
@click.argument("webhook_id", metavar="ID")
@click.option("--state", type=click.Choice(DELIVERY_STATES), help="Only deliveries in this state.")
@click.option("--run-id", metavar="ID", help="Only deliveries of this run's events.")
@click.option("--event-id", metavar="EVT", help="Only deliveries of this event (evt_...).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="Page size.")
@click.option("--cursor", help="Continue from a previous page's next_cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Follow next_cursor to the last page.")
@click.option("--json", "as_json", is_flag=True, help='Print {"data": [...], "next_cursor": ...}, attempt logs '
                                                      "included.")
@api_options
def webhooks_deliveries(webhook_id, state, run_id, event_id, limit, cursor, all_pages, as_json) -> None:
    """List an endpoint's deliveries, newest first.

    A delivery is pending until its receiver answers 2xx (delivered) or it is given up (failed); LAST is the
    last attempt's HTTP status or error. Resend one with `redeliver`.
    """
    client = get_client()
    filters = dict(state=state, run_id=run_id, event_id=event_id)
    page: dict[str, Any]
    if all_pages:
        page = {"data": list(client.webhooks.deliveries(webhook_id, cursor=cursor, limit=limit, **filters)),
                "next_cursor": None}
    else:
        page = client.webhooks.deliveries_page(webhook_id, cursor=cursor, limit=limit, **filters)
    if as_json:
        echo_json(page)
        return
    rows = [[d["id"], d["state"], d["event_type"], d["run_id"], str(d["attempts"]), _last(d), d["created_at"]]
            for d in page["data"]]
    _table(rows, ["ID", "STATE", "EVENT", "RUN", "ATTEMPTS", "LAST", "CREATED"])
    if page.get("next_cursor"):
        click.echo(f"more: --cursor {page['next_cursor']}", err=True)


@webhooks.command("redeliver")
@click.argument("webhook_id", metavar="ID")
@click.argument("delivery_id", metavar="DELIVERY_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the new delivery as JSON.")
@api_options
def webhooks_redeliver(webhook_id, delivery_id, as_json) -> None:
    """Send a delivery's event again, as a new delivery with the same event id (receivers de-duplicate on it)."""
    delivery = get_client().webhooks.redeliver(webhook_id, delivery_id)
    if as_json:
        echo_json(delivery)
    else:
        click.echo(f"delivery {delivery['id']} {delivery['state']}: {delivery['event_type']} "
                   f"{delivery['event_id']} to {delivery['url']}")
