"""The run's public shape: what the API answers and what a webhook event carries as `data`.

Dump-only marshmallow schemas, in the core because two front-ends render runs: the API's views and
the webhook dispatcher (workers.webhook_dispatch), which must send the same shape the API returns.
"""
from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import Schema, fields

from agentruns.vocabulary import KINDS, PROVIDERS, STATUSES
from core.models import Run


class UTCDateTime(fields.DateTime):
    """RFC 3339 in UTC with a `Z`, whatever the database session's time zone was.

    A DateTime for apispec (`type: string, format: date-time`); it only ever dumps.
    """

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else utc_text(value)


def utc_text(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`: how every timestamp of the API is written."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# Response schemas: dump only, so `required=True` is documentation: the field is always sent (null when
# unset, which `nullable` documents). `enum` metadata documents the vocabulary without validating.
def one_of(values) -> dict:
    return {"enum": list(values)}


def nullable_nested(schema, **kwargs) -> fields.Nested:
    """A nested object or null, documented as `nullable` + `allOf: [$ref]` (OpenAPI 3.0's form).

    Not `allow_none`: apispec renders that as `anyOf: [{type: object, nullable: true}, $ref]`, which
    admits any object. Dumping a None gives null either way.
    """
    return fields.Nested(schema, metadata={"nullable": True}, **kwargs)


class RunError(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable, e.g. timeout, canceled"})
    message = fields.String(required=True)


class RunSummary(Schema):
    id = fields.UUID(required=True)
    target_kind = fields.String(required=True, metadata=one_of(KINDS))
    target_id = fields.String(required=True)
    provider = fields.String(required=True, metadata=one_of(PROVIDERS))
    status = fields.String(required=True, metadata=one_of(STATUSES))
    prompt = fields.String(required=True)
    metadata = fields.Dict(required=True, attribute="metadata_")
    created_at = UTCDateTime(required=True)
    finished_at = UTCDateTime(required=True, allow_none=True)


class RunOut(RunSummary):
    # allow_none documents `nullable` in the spec: these are null until (or unless) a run sets them.
    model = fields.String(required=True, allow_none=True)
    cwd = fields.String(required=True)
    timeout = fields.Integer(required=True)
    command = fields.String(required=True, allow_none=True)
    output = fields.String(required=True, allow_none=True)
    stdout = fields.String(required=True, allow_none=True)
    stderr = fields.String(required=True, allow_none=True)
    stdout_truncated = fields.Boolean(required=True)
    stderr_truncated = fields.Boolean(required=True)
    exit_code = fields.Integer(required=True, allow_none=True)
    error = nullable_nested(RunError, required=True)
    usage = fields.Dict(required=True, allow_none=True)
    cost_usd = fields.Float(required=True, allow_none=True)
    session_id = fields.String(required=True, allow_none=True)
    cancel_requested = fields.Function(lambda r: r.cancel_requested_at is not None, required=True,
                                       metadata={"type": "boolean"})
    request_id = fields.String(required=True, allow_none=True)
    started_at = UTCDateTime(required=True, allow_none=True)
    updated_at = UTCDateTime(required=True)
    webhook_url = fields.String(required=True, allow_none=True,
                                metadata={"description": "where this run's webhook events also go"})


# The timestamp columns of an event's run, which JSON carries as text (migration 0006's snapshot).
_TIMESTAMPS = ("created_at", "updated_at", "started_at", "finished_at", "cancel_requested_at")


def run_from_snapshot(row: dict) -> Run:
    """A transient Run from the JSON of a runs row (`to_jsonb(runs)`), for RunOut to dump."""
    values = {key: value for key, value in row.items() if key in Run.__table__.c}
    values["metadata_"] = values.pop("metadata", {})
    for key in _TIMESTAMPS:
        if values.get(key):
            values[key] = datetime.fromisoformat(values[key])
    return Run(**values)
