"""Webhooks: the tenant's endpoints and its per-run endpoint; add, edit, delete, rotate the signing
secret, and each endpoint's delivery log with Redeliver.

A signing secret leaves the server once, in the answer to a create or a rotation. Here that answer is
a redirect to the endpoint's page (so a reload sends nothing again), and the secret waits for that
page in Redis: encrypted, bound to this session's nonce, for a few minutes, and taken by the first
page that shows it. Reloading shows it no more.
"""
from __future__ import annotations

import logging
from urllib.parse import urlencode

import redis
from flask import current_app, redirect, render_template, request, url_for
from marshmallow import ValidationError

from agentruns.vocabulary import DELIVERY_STATES, PROVIDERS, WEBHOOK_ALL_EVENTS
from app.api.webhook_schemas import DeliveryListQuery
from app.console import present, session, webhook_forms
from app.console.blueprint import blp, tenant_id
from core import db
from core.crypto import decrypt_json, encrypt_json
from core.errors import DomainError, Invalid, NotFound
from core.services import devices as device_service
from core.services import webhooks as webhook_service

log = logging.getLogger("agentruns.console")

PAGE_SIZE = 25
REVEAL_SECONDS = 600
_REVEAL = "agentruns:console:webhook-secret:"
_QUERY = DeliveryListQuery()


def _settings():
    return current_app.extensions["settings"]


def _grace() -> str:
    """How long a rotated-out secret keeps signing, in words (a day, 6 hours, 1 h 30 m)."""
    seconds = _settings().webhook_secret_grace_seconds
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= unit and seconds % unit == 0:
            count = seconds // unit
            return f"a {name}" if count == 1 else f"{count} {name}s"
    return present.duration(seconds)


def _redis():
    return current_app.extensions["redis"]


# --- the secret, shown once ------------------------------------------------------------------------
def _reveal_key(endpoint_id: str) -> str:
    return f"{_REVEAL}{session.current().nonce}:{endpoint_id}"


def _keep_for_next_page(endpoint_id: str, secret: str, kind: str) -> bool:
    """Hold the secret for the endpoint's next page view in this session; False if Redis is down."""
    blob = encrypt_json(_settings().secret_key, {"secret": secret, "kind": kind})
    try:
        _redis().set(_reveal_key(endpoint_id), blob, ex=REVEAL_SECONDS)
    except redis.RedisError as exc:
        log.warning("could not hold a webhook secret for the next page: %s", exc)
        return False
    return True


def _take_secret(endpoint_id: str) -> dict | None:
    """The secret waiting for this page, once: {"secret", "kind": "created" | "rotated"} or None."""
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.get(_reveal_key(endpoint_id))
        pipe.delete(_reveal_key(endpoint_id))
        blob, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not read a webhook secret held for this page: %s", exc)
        return None
    if not blob:
        return None
    try:
        return decrypt_json(_settings().secret_key, blob)
    except RuntimeError:  # the service's secret key changed meanwhile
        return None


def _show_secret(endpoint_id: str, secret: str, kind: str):
    """Redirect to the endpoint's page, which shows the secret; or, with Redis down, show it here."""
    if _keep_for_next_page(endpoint_id, secret, kind):
        return redirect(url_for("console.webhook_page", endpoint_id=endpoint_id))
    return _render_endpoint(endpoint_id, reveal={"secret": secret, "kind": kind})


# --- the list and the add form ---------------------------------------------------------------------
def _per_run(s) -> dict | None:
    try:
        return webhook_service.to_out(webhook_service.get(s, tenant_id(), webhook_service.PER_RUN))
    except NotFound:
        return None


@blp.get("/webhooks")
def webhooks():
    """The tenant's endpoints and the state of its per-run endpoint."""
    with db.session() as s:
        rows = [webhook_service.to_out(e) for e in webhook_service.list_all(s, tenant_id())]
        per_run = _per_run(s)
    return render_template("console/webhooks.html", endpoints=rows, per_run=per_run, present=present,
                           all_events=WEBHOOK_ALL_EVENTS)


def _device_ids() -> list[str]:
    with db.session() as s:
        return [d.id for d in device_service.list_all(s, tenant_id())]


def _render_new(form: dict, errors: dict[str, list[str]], status: int = 200):
    return render_template("console/webhook_new.html", form=form, errors=errors,
                           events=webhook_forms.EVENT_CHOICES, providers=PROVIDERS,
                           device_ids=_device_ids()), status


@blp.get("/webhooks/new")
def webhook_new():
    """The add-endpoint form."""
    return _render_new({"events": [WEBHOOK_ALL_EVENTS], "enabled": True}, {})


@blp.post("/webhooks/new")
def webhook_create():
    """Add an endpoint, then open it: its page shows the signing secret, this once."""
    try:
        body = webhook_forms.create_body(request.form)
        with db.session() as s:
            endpoint, secret = webhook_service.create(s, tenant_id(), body, _settings())
            endpoint_id = str(endpoint.id)
    except webhook_forms.FormProblems as exc:
        return _render_new(webhook_forms.typed(request.form), exc.fields, 422)
    except DomainError as exc:
        return _render_new(webhook_forms.typed(request.form),
                           exc.details.get("fields") or {"_form": [exc.message]}, 422)
    session.current().flash("ok", "Webhook added. Copy its signing secret below: it is shown only now.")
    return _show_secret(endpoint_id, secret, "created")


# --- one endpoint ----------------------------------------------------------------------------------
def _deliveries(s, endpoint_id: str) -> tuple[list[dict], str | None, dict, list[str]]:
    """A page of the delivery log (the URL's `state` and `cursor`), and what was wrong with them."""
    args = {k: request.args[k].strip() for k in ("state", "cursor") if request.args.get(k, "").strip()}
    problems: list[str] = []
    try:
        query = _QUERY.load({**args, "limit": PAGE_SIZE})
    except ValidationError as exc:
        problems += [f"{k}: {', '.join(v)}" for k, v in exc.messages.items()]  # type: ignore[union-attr]
        args, query = {}, _QUERY.load({"limit": PAGE_SIZE})
    try:
        rows, next_cursor = webhook_service.list_deliveries(s, tenant_id(), endpoint_id, query)
    except Invalid as exc:  # a cursor this server did not write
        problems.append(exc.message)
        args.pop("cursor", None)
        query.pop("cursor", None)
        rows, next_cursor = webhook_service.list_deliveries(s, tenant_id(), endpoint_id, query)
    return rows, next_cursor, args, problems


def _page_url(endpoint_id: str, **args: str | None) -> str:
    pairs = [(k, v) for k, v in args.items() if v]
    return url_for("console.webhook_page", endpoint_id=endpoint_id) + ("?" + urlencode(pairs) if pairs else "")


def _render_endpoint(endpoint_id: str, errors: dict[str, list[str]] | None = None, status: int = 200,
                     reveal: dict | None = None):
    with db.session() as s:
        endpoint = webhook_service.to_out(webhook_service.get(s, tenant_id(), endpoint_id))
        rows, next_cursor, args, problems = _deliveries(s, endpoint_id)
    form = webhook_forms.typed(request.form) if errors else webhook_forms.form_of(endpoint)
    older = _page_url(endpoint_id, state=args.get("state"), cursor=next_cursor) if next_cursor else None
    newest = _page_url(endpoint_id, state=args.get("state")) if "cursor" in args else None
    if reveal is None and request.method == "GET":
        reveal = _take_secret(endpoint["id"])
    return render_template("console/webhook.html", endpoint=endpoint, form=form, errors=errors or {},
                           events=webhook_forms.EVENT_CHOICES, providers=PROVIDERS, device_ids=_device_ids(),
                           deliveries=rows, delivery_args=args, delivery_problems=problems, older=older,
                           newest=newest, states=DELIVERY_STATES, reveal=reveal, grace=_grace(),
                           present=present), status


@blp.get("/webhooks/<endpoint_id>")
def webhook_page(endpoint_id: str):
    """One endpoint: its state, its delivery log, its settings to edit, rotate, delete."""
    return _render_endpoint(endpoint_id)


@blp.post("/webhooks/<endpoint_id>")
def webhook_update(endpoint_id: str):
    """Save the edit form (only what changed is sent)."""
    try:
        with db.session() as s:
            current = webhook_service.to_out(webhook_service.get(s, tenant_id(), endpoint_id, lock=True))
            if current["per_run"]:
                session.current().flash("error", "The per-run endpoint has no settings; rotate its secret instead.")
                return redirect(url_for("console.webhook_page", endpoint_id=endpoint_id))
            body = webhook_forms.patch_body(request.form, current)
            if body:
                webhook_service.update(s, tenant_id(), endpoint_id, body, _settings())
    except webhook_forms.FormProblems as exc:
        return _render_endpoint(endpoint_id, exc.fields, 422)
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return _render_endpoint(endpoint_id, exc.details.get("fields") or {"_form": [exc.message]}, 422)
    session.current().flash("ok", "Saved." if body else "Nothing changed.")
    return redirect(url_for("console.webhook_page", endpoint_id=endpoint_id))


@blp.post("/webhooks/<endpoint_id>/delete")
def webhook_delete(endpoint_id: str):
    """Delete an endpoint (its pending deliveries go with it)."""
    with db.session() as s:
        endpoint = webhook_service.get(s, tenant_id(), endpoint_id)
        if endpoint.per_run:
            session.current().flash("error", "The per-run endpoint cannot be deleted; rotate its secret instead.")
            return redirect(url_for("console.webhook_page", endpoint_id=endpoint_id))
        url = endpoint.url
        webhook_service.delete(s, tenant_id(), endpoint_id)
    session.current().flash("ok", f"Webhook {url} deleted.")
    return redirect(url_for("console.webhooks"))


@blp.post("/webhooks/<endpoint_id>/rotate-secret")
def webhook_rotate(endpoint_id: str):
    """A new signing secret, shown once on the endpoint's page; `per-run` creates that endpoint."""
    with db.session() as s:
        new = endpoint_id == webhook_service.PER_RUN and _per_run(s) is None
        endpoint, secret = webhook_service.rotate_secret(s, tenant_id(), endpoint_id, _settings())
        shown_id = webhook_service.to_out(endpoint)["id"]
    made = "Per-run secret made." if new else "New signing secret made."
    session.current().flash("ok", f"{made} Copy it below: it is shown only now.")
    return _show_secret(shown_id, secret, "created" if new else "rotated")


@blp.post("/webhooks/<endpoint_id>/deliveries/<delivery_id>/redeliver")
def webhook_redeliver(endpoint_id: str, delivery_id: str):
    """Send a delivery's event again, as a new delivery with the same event id."""
    with db.session() as s:
        delivery = webhook_service.redeliver(s, tenant_id(), endpoint_id, delivery_id)
    session.current().flash("ok", f"Redelivery of {delivery['event_type']} {delivery['event_id']} queued: "
                                  "it is the new delivery at the top of the log.")
    return redirect(url_for("console.webhook_page", endpoint_id=endpoint_id))
