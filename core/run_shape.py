"""The run's public shape: what the API answers and what a webhook event carries as `data`.

Dump-only marshmallow schemas, in the core because two front-ends render runs: the API's views and
the webhook dispatcher (workers.webhook_dispatch), which must send the same shape the API returns.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields, missing

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


def _text(value):
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


# What Field._serialize does for these exact field classes (marshmallow 4): the planned dump calls
# the conversion directly. Any other field, or a value the object lacks, goes through the field.
_CONVERSIONS: dict[type, Callable[[Any], Callable[[Any], Any] | None]] = {
    fields.String: lambda f: _text,
    fields.UUID: lambda f: _text,
    fields.Integer: lambda f: None if f.as_string else _optional(int),
    fields.Float: lambda f: None if f.as_string else _optional(float),
    fields.Boolean: lambda f: lambda value: value,
    fields.Dict: lambda f: _optional(dict) if f.key_field is None and f.value_field is None else None,
}


class PlannedDump(Schema):
    """Schema.dump with its plan (which key, from which attribute, through which conversion) made once
    per schema instance: marshmallow's generic path costs about 10 µs per field, and the API dumps
    runs on every answer, 20 per list page. The result is the same (tests/test_api_perf_dump.py
    compares the two on varied runs); hooks, `many`, dicts and missing attributes take the generic path.
    """

    _plan: list[tuple[str, str, str, fields.Field, Callable[[Any], Any] | None]] | None = None

    def dump(self, obj: Any, *, many: bool | None = None):
        plan = self._plan
        if plan is None:
            plan = self._plan = [] if any(self._hooks.values()) else [
                (field.data_key if field.data_key is not None else name, name, field.attribute or name, field,
                 _conversion(field)) for name, field in self.dump_fields.items()]
        if not plan or (self.many if many is None else many) or obj is None or hasattr(type(obj), "__getitem__"):
            return super().dump(obj, many=many)
        out = {}
        for key, name, attribute, field, convert in plan:
            value = getattr(obj, attribute, missing) if convert is not None else missing
            if value is missing:
                value = field.serialize(name, obj, accessor=self.get_attribute)
                if value is missing:
                    continue
            elif convert is not None:
                value = convert(value)
            out[key] = value
        return out


def _conversion(field: fields.Field) -> Callable[[Any], Any] | None:
    if isinstance(field, UTCDateTime):
        return _optional(utc_text)
    make = _CONVERSIONS.get(type(field))
    return make(field) if make is not None and "." not in (field.attribute or "") else None


class RunError(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable, e.g. timeout, canceled"})
    message = fields.String(required=True)


class RunSummary(PlannedDump):
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
