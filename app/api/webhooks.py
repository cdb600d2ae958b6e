"""/api/v1/webhooks: the tenant's webhook endpoints, their secrets and their delivery log."""
from __future__ import annotations

from flask import current_app, g

from app.api.parser import Blueprint
from app.api.webhook_schemas import (
    DeliveryEnvelope,
    DeliveryListEnvelope,
    DeliveryListQuery,
    WebhookCreate,
    WebhookEnvelope,
    WebhookListEnvelope,
    WebhookPatch,
    WebhookSecretEnvelope,
)
from core import db
from core.services import webhooks as webhook_service

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1", description="Webhooks")
_NOT_FOUND = {404: "not_found: no such webhook endpoint in this tenant (`per-run`: none yet)."}
_REFUSED = ("validation_error: the body failed validation (error.details.fields names the fields); "
            "webhook_url_refused: the URL is not https, does not resolve, or resolves to an internal address.")


# Answers that carry a secret: no cache keeps a copy.
_NO_STORE = {"Cache-Control": "no-store"}


def _settings():
    return current_app.extensions["settings"]


@blp.route("/webhooks", methods=["POST"])
@blp.arguments(WebhookCreate)
@blp.response(201, WebhookSecretEnvelope, headers={"Location": {
    "description": "The endpoint's path, /api/v1/webhooks/{id}.", "required": True,
    "schema": {"type": "string", "format": "uri-reference"}}})
@blp.errors({422: _REFUSED})
def create_webhook(data):
    """Subscribe a URL to run events; the answer holds the signing secret, shown only here."""
    with db.session() as s:
        endpoint, secret = webhook_service.create(s, g.tenant_id, data, _settings())
        out = webhook_service.to_out(endpoint, secret)
    return {"data": out}, 201, {"Location": f"/api/v1/webhooks/{out['id']}", **_NO_STORE}


@blp.route("/webhooks", methods=["GET"])
@blp.response(200, WebhookListEnvelope)
def list_webhooks():
    """The tenant's endpoints, oldest first (the per-run endpoint is at /webhooks/per-run)."""
    with db.session() as s:
        return {"data": [webhook_service.to_out(e) for e in webhook_service.list_all(s, g.tenant_id)]}


@blp.route("/webhooks/<endpoint_id>", methods=["GET"])
@blp.response(200, WebhookEnvelope)
@blp.errors(_NOT_FOUND)
def get_webhook(endpoint_id):
    """One endpoint; `per-run` is the one whose secret signs the events sent to runs' own webhook_url."""
    with db.session() as s:
        return {"data": webhook_service.to_out(webhook_service.get(s, g.tenant_id, endpoint_id))}


@blp.route("/webhooks/<endpoint_id>", methods=["PATCH"])
@blp.arguments(WebhookPatch)
@blp.response(200, WebhookEnvelope)
@blp.errors({**_NOT_FOUND, 422: _REFUSED + " per_run_endpoint: the per-run endpoint has no settings."})
def patch_webhook(data, endpoint_id):
    """Change some fields; `enabled: true` re-enables an endpoint the server disabled. Disabling one ends
    its pending deliveries (`failed`, "endpoint disabled"); redeliver sends one again."""
    with db.session() as s:
        return {"data": webhook_service.to_out(
            webhook_service.update(s, g.tenant_id, endpoint_id, data, _settings()))}


@blp.route("/webhooks/<endpoint_id>", methods=["DELETE"])
@blp.response(204)
@blp.errors({**_NOT_FOUND, 409: "per_run_endpoint: the per-run endpoint cannot be deleted."})
def delete_webhook(endpoint_id):
    """Delete an endpoint; its pending deliveries are dropped."""
    with db.session() as s:
        webhook_service.delete(s, g.tenant_id, endpoint_id)


@blp.route("/webhooks/<endpoint_id>/rotate-secret", methods=["POST"])
@blp.response(200, WebhookSecretEnvelope)
@blp.errors(_NOT_FOUND)
def rotate_webhook_secret(endpoint_id):
    """A new signing secret, shown only here; the old one keeps signing beside it for a grace period
    (AGENTRUNS_WEBHOOK_SECRET_GRACE_SECONDS, a day by default). `per-run` creates that endpoint if needed."""
    with db.session() as s:
        endpoint, secret = webhook_service.rotate_secret(s, g.tenant_id, endpoint_id, _settings())
        return {"data": webhook_service.to_out(endpoint, secret)}, 200, _NO_STORE


@blp.route("/webhooks/<endpoint_id>/deliveries", methods=["GET"])
@blp.arguments(DeliveryListQuery(), location="query")
@blp.response(200, DeliveryListEnvelope)
@blp.errors({**_NOT_FOUND, 422: "validation_error: a filter failed validation or the cursor is not one this "
                                "API returned."})
def list_deliveries(query, endpoint_id):
    """The endpoint's deliveries, newest first, each with its attempts; follow next_cursor for more."""
    with db.session() as s:
        rows, next_cursor = webhook_service.list_deliveries(s, g.tenant_id, endpoint_id, query)
    return {"data": rows, "next_cursor": next_cursor}


@blp.route("/webhooks/<endpoint_id>/deliveries/<delivery_id>/redeliver", methods=["POST"])
@blp.response(202, DeliveryEnvelope)
@blp.errors({404: "not_found: no such webhook endpoint or delivery in this tenant.",
             409: "webhook_disabled: the endpoint is disabled; delivery_pending: that delivery is still being "
                  "tried."})
def redeliver(endpoint_id, delivery_id):
    """Send a delivery's event again: a new delivery with the same event id."""
    with db.session() as s:
        return {"data": webhook_service.redeliver(s, g.tenant_id, endpoint_id, delivery_id)}
