"""Request and response schemas for /api/v1/keys."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from agentruns.vocabulary import KEY_ROLES, TENANT_ROLE
from app.api.schemas import Text, UTCDateTime, one_of

KEY_STATES = ("active", "expired", "revoked")


class KeyCreate(Schema):
    name = Text(validate=validate.Length(1, 200), allow_none=True, metadata={"description": "what the key is for"})
    role = fields.String(validate=validate.OneOf(KEY_ROLES), load_default=TENANT_ROLE, metadata={
        "description": "only `tenant` here: operator keys are created by the operator's CLI (403)"})
    expires_in_days = fields.Integer(validate=validate.Range(1, 3650), allow_none=True, metadata={
        "description": "the key expires this many days from now (default: never)"})
    expires_at = fields.AwareDateTime(default_timezone=None, allow_none=True, metadata={
        "description": "the key expires at this time (RFC 3339 with an offset); not with expires_in_days"})

    @validates_schema
    def _one_expiry(self, data, **_):
        if data.get("expires_in_days") is not None and data.get("expires_at") is not None:
            raise ValidationError("give expires_in_days or expires_at, not both", "expires_at")


class KeyOut(Schema):
    prefix = fields.String(required=True, metadata={"description": "the key's visible start; names it in the API"})
    name = fields.String(required=True, allow_none=True)
    role = fields.String(required=True, metadata=one_of(KEY_ROLES))
    state = fields.String(required=True, metadata=one_of(KEY_STATES))
    current = fields.Boolean(required=True, metadata={"description": "the key this request was made with"})
    created_at = UTCDateTime(required=True)
    last_used_at = UTCDateTime(required=True, allow_none=True, metadata={
        "description": "the last request made with it, to the minute (null: never used)"})
    expires_at = UTCDateTime(required=True, allow_none=True, metadata={"description": "null: never expires"})
    revoked_at = UTCDateTime(required=True, allow_none=True)


class KeyWithSecret(KeyOut):
    key = fields.String(required=True, metadata={
        "description": "the full key: shown only in this answer and stored only as a hash (keep it now)"})


class KeyEnvelope(Schema):
    data = fields.Nested(KeyOut, required=True)


class KeySecretEnvelope(Schema):
    data = fields.Nested(KeyWithSecret, required=True)


class KeyListEnvelope(Schema):
    data = fields.List(fields.Nested(KeyOut), required=True)
