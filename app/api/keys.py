"""/api/v1/keys: the tenant's API keys (list, create, revoke, rotate). The rules of who may manage
which key are core.services.keys' (a tenant key cannot touch operator keys)."""
from __future__ import annotations

from flask import g

from app.api.key_schemas import KeyCreate, KeyEnvelope, KeyListEnvelope, KeySecretEnvelope
from app.api.parser import Blueprint
from core import db
from core.services import keys as key_service

blp = Blueprint("keys", __name__, url_prefix="/api/v1", description="API keys")
_NOT_FOUND = {404: "not_found: no such API key in this tenant."}
_OPERATOR_KEY = "forbidden: the key is an operator key and the caller's key is not."
_LOCATION = {"description": "The new key's path, /api/v1/keys/{prefix}.", "required": True,
             "schema": {"type": "string", "format": "uri-reference"}}


def _with_secret(key, raw: str) -> dict:
    return {**key_service.to_out(key, g.key_id), "key": raw}


@blp.route("/keys", methods=["GET"])
@blp.response(200, KeyListEnvelope)
def list_keys():
    """The tenant's keys, newest first, revoked and expired ones included (never a key's secret)."""
    with db.session() as s:
        return {"data": [key_service.to_out(k, g.key_id) for k, _ in key_service.list_keys(s, g.tenant_id)]}


@blp.route("/keys", methods=["POST"])
@blp.arguments(KeyCreate)
@blp.response(201, KeySecretEnvelope, headers={"Location": _LOCATION})
@blp.errors({403: "forbidden: role operator (operator keys are created by the operator's CLI).",
             422: "validation_error: the body failed validation (error.details.fields names the fields)."})
def create_key(data):
    """Create a tenant key; the answer holds the full key, shown only here."""
    with db.session() as s:
        key, raw = key_service.create_for_tenant(s, g.tenant_id, data)
        out = _with_secret(key, raw)
    return {"data": out}, 201, {"Location": f"/api/v1/keys/{out['prefix']}"}


@blp.route("/keys/<prefix>", methods=["GET"])
@blp.response(200, KeyEnvelope)
@blp.errors(_NOT_FOUND)
def get_key(prefix):
    """One key, by its prefix."""
    with db.session() as s:
        return {"data": key_service.to_out(key_service.get(s, prefix, tenant_id=g.tenant_id), g.key_id)}


@blp.route("/keys/<prefix>/revoke", methods=["POST"])
@blp.response(200, KeyEnvelope)
@blp.errors({**_NOT_FOUND, 403: _OPERATOR_KEY})
def revoke_key(prefix):
    """Revoke a key: every API process refuses it from the next request on. A key may revoke itself;
    revoking a revoked key changes nothing."""
    with db.session() as s:
        key = key_service.revoke(s, prefix, tenant_id=g.tenant_id, caller_role=g.key_role)
        return {"data": key_service.to_out(key, g.key_id)}


@blp.route("/keys/<prefix>/rotate", methods=["POST"])
@blp.response(201, KeySecretEnvelope, headers={"Location": _LOCATION})
@blp.errors({**_NOT_FOUND, 403: _OPERATOR_KEY,
             409: "key_revoked, key_expired: the key is revoked or expired; create a new one instead."})
def rotate_key(prefix):
    """A new key with the same name, role and expiry, shown only here; the old key is revoked at once.
    A key may rotate itself (use the new key from then on)."""
    with db.session() as s:
        key, raw = key_service.rotate(s, prefix, tenant_id=g.tenant_id, caller_role=g.key_role)
        out = _with_secret(key, raw)
    return {"data": out}, 201, {"Location": f"/api/v1/keys/{out['prefix']}"}
