"""Request and response schemas for /api/v1/webhooks."""
from __future__ import annotations

import math

from marshmallow import Schema, ValidationError, fields, validate, validates

from agentruns.vocabulary import DELIVERY_STATES, PROVIDERS, WEBHOOK_ALL_EVENTS, WEBHOOK_EVENT_TYPES
from app.api.schemas import Text, UTCDateTime, one_of, unstorable, webhook_url_field

EVENT_CHOICES = (*WEBHOOK_EVENT_TYPES, WEBHOOK_ALL_EVENTS)


class WebhookFilters(Schema):
    target_id = Text(validate=validate.Length(1, 200), allow_none=True,
                     metadata={"description": "only runs on this device"})
    provider = fields.String(validate=validate.OneOf(PROVIDERS), allow_none=True)
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(1, 40)), load_default=dict, metadata={
        "description": "only runs whose metadata has each of these top-level keys with this value",
        "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}})

    @validates("metadata")
    def _metadata(self, value, **_):
        if len(value) > 20:
            raise ValidationError("at most 20 keys")
        for key, item in value.items():
            plain = isinstance(item, (str, bool, int)) or isinstance(item, float) and math.isfinite(item)
            if not plain:
                raise ValidationError(f"{key}: values must be strings, numbers or booleans")
            if unstorable(key) or isinstance(item, str) and unstorable(item):
                raise ValidationError(f"{key}: {unstorable(key) or unstorable(item)}")


class _WebhookFields(Schema):
    url = webhook_url_field(metadata={"description": "https (http only where the server allows it); internal "
                                                     "addresses are refused unless the server allows them"})
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_CHOICES)),
                         validate=validate.Length(1, len(EVENT_CHOICES)),
                         metadata={"description": f"event types to receive; {WEBHOOK_ALL_EVENTS} is all of them"})
    filters = fields.Nested(WebhookFilters)
    enabled = fields.Boolean()
    description = Text(validate=validate.Length(max=500), allow_none=True)


class WebhookCreate(_WebhookFields):
    url = webhook_url_field(required=True, metadata=_WebhookFields._declared_fields["url"].metadata)
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_CHOICES)),
                         validate=validate.Length(1, len(EVENT_CHOICES)), load_default=[WEBHOOK_ALL_EVENTS],
                         metadata={"description": f"event types to receive (default: {WEBHOOK_ALL_EVENTS}, all)"})


class WebhookPatch(_WebhookFields):
    pass


class WebhookFiltersOut(Schema):
    target_id = fields.String(required=True, allow_none=True)
    provider = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True)


class WebhookOut(Schema):
    id = fields.String(required=True, metadata={"description": "a UUID, or `per-run` for the per-run endpoint"})
    url = fields.String(required=True, allow_none=True, metadata={"description": "null for the per-run endpoint"})
    per_run = fields.Boolean(required=True, metadata={
        "description": "the endpoint whose secret signs the events sent to runs' own webhook_url"})
    events = fields.List(fields.String(metadata=one_of(EVENT_CHOICES)), required=True)
    filters = fields.Nested(WebhookFiltersOut, required=True)
    enabled = fields.Boolean(required=True)
    disabled_reason = fields.String(required=True, allow_none=True, metadata={
        "description": "why the server disabled it (an endpoint failing for days is disabled)"})
    failing_since = UTCDateTime(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    previous_secret_expires_at = UTCDateTime(required=True, allow_none=True, metadata={
        "description": "until then the secret before the last rotation signs too"})
    created_at = UTCDateTime(required=True)
    updated_at = UTCDateTime(required=True)


class WebhookWithSecret(WebhookOut):
    secret = fields.String(required=True, metadata={
        "description": "the signing secret: shown only in this answer (store it now)"})


class WebhookEnvelope(Schema):
    data = fields.Nested(WebhookOut, required=True)


class WebhookSecretEnvelope(Schema):
    data = fields.Nested(WebhookWithSecret, required=True)


class WebhookListEnvelope(Schema):
    data = fields.List(fields.Nested(WebhookOut), required=True)


class AttemptOut(Schema):
    at = UTCDateTime(required=True)
    status_code = fields.Integer(required=True, allow_none=True, metadata={"description": "null: no answer"})
    error = fields.String(required=True, allow_none=True)
    latency_ms = fields.Integer(required=True)


class DeliveryOut(Schema):
    id = fields.UUID(required=True)
    event_id = fields.String(required=True, metadata={"description": "evt_...; the same for every delivery of "
                                                                     "one event (receivers de-duplicate on it)"})
    event_type = fields.String(required=True, metadata=one_of(WEBHOOK_EVENT_TYPES))
    run_id = fields.UUID(required=True)
    url = fields.String(required=True)
    state = fields.String(required=True, metadata={
        **one_of(DELIVERY_STATES), "description": "pending until delivered (a 2xx) or failed (given up)"})
    attempts = fields.Integer(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    last_latency_ms = fields.Integer(required=True, allow_none=True)
    next_attempt_at = UTCDateTime(required=True, allow_none=True, metadata={
        "description": "when a pending delivery is tried next; null once it is not pending"})
    delivered_at = UTCDateTime(required=True, allow_none=True)
    created_at = UTCDateTime(required=True)
    attempt_log = fields.List(fields.Nested(AttemptOut), required=True)


class DeliveryEnvelope(Schema):
    data = fields.Nested(DeliveryOut, required=True)


class DeliveryListEnvelope(Schema):
    data = fields.List(fields.Nested(DeliveryOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class DeliveryListQuery(Schema):
    state = fields.String(validate=validate.OneOf(DELIVERY_STATES))
    run_id = fields.UUID()
    event_id = fields.String(validate=validate.Regexp(r"^evt_[0-9a-f]{32}$"))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    cursor = fields.String(validate=validate.Length(max=200))

