"""Request (load) and response (dump) schemas for runs. Load and dump are separate on purpose."""
from __future__ import annotations

import json
import math
import re

from flask import current_app, has_app_context
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from agentruns.vocabulary import DEFAULT_PROVIDER, EVENT_TYPES, KINDS, PROVIDERS, STATUSES

# The run's shape is the core's (webhook events carry it too); re-exported for the views and the spec.
from core.run_shape import RunError, RunOut, RunSummary, UTCDateTime, nullable_nested, one_of  # noqa: F401

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MODEL = re.compile(r"^[A-Za-z0-9._:/@-]{1,200}$")
MAX_WAIT_SECONDS = 600
MAX_SEQ = 2**63 - 1  # run_events.seq is a bigint
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(value: str) -> str | None:
    """Why PostgreSQL cannot store this string, or None.

    text and jsonb reject NUL, and a lone surrogate (which JSON's \\u escapes can carry) has no UTF-8
    encoding: either would reach the database, or a device, as a 500.
    """
    if "\x00" in value:
        return "must not contain NUL"
    if _SURROGATE.search(value):
        return "must not contain lone surrogates (U+D800 to U+DFFF)"
    return None


class Text(fields.String):
    """A string that PostgreSQL can store and a device can be given (see `unstorable`)."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        problem = unstorable(value)
        if problem:
            raise ValidationError(problem)
        return value


class FullMatch(validate.Regexp):
    """A pattern that must match the whole value: Python's `$` also matches before a final newline.

    The pattern stays `^...$` for the OpenAPI spec, where (ECMA) `$` means the end.
    """

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def check_cwd(value: str) -> None:
    if not value.startswith("/"):
        raise ValidationError("must be an absolute path")
    if len(value.encode()) > 4096:
        raise ValidationError("at most 4096 bytes")


def _unstorable_json(value) -> str | None:
    """`unstorable` for any string, key or value, in a JSON document (walked without recursion).

    Also NaN and Infinity, which Python's json reads but jsonb, like JSON, cannot hold, and nesting
    deeper than MAX_JSON_DEPTH: what Python's parser still takes (about 990 levels) overflows the
    recursion limit of the JSON encoders that store and serve the value.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = unstorable(item)
            if problem:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return "must not contain NaN, Infinity or numbers beyond a double (such as 1e400)"
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"at most {MAX_JSON_DEPTH} levels of nesting"
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                item = item.values()
            stack.extend((v, depth + 1) for v in item)
    return None


# AGENTRUNS_*: what the providers set for the command (prompt file, run id...); __agentruns_*: the
# ssh wrapper's own shell variables.
RESERVED_ENV_PREFIXES = ("AGENTRUNS_", "__agentruns_")


def env_values() -> fields.Raw:
    """An env dict's values: taken raw, so that check_env names the variable whose value is not a
    string (without echoing it); documented as strings."""
    return fields.Raw(metadata={"type": "string"})


def check_env(value: dict) -> None:
    for name, val in value.items():
        if not ENV_NAME.fullmatch(name):  # not .match: its `$` lets "NAME\n" through
            raise ValidationError(f"invalid variable name {name!r}")
        if name.startswith(RESERVED_ENV_PREFIXES):
            raise ValidationError(f"{name}: names starting with AGENTRUNS_ or __agentruns_ are reserved")
        if not isinstance(val, str):
            raise ValidationError(f"value of {name} must be a string")
        problem = unstorable(val)
        if problem:  # the value is a secret more often than not: name the variable, never echo the value
            raise ValidationError(f"value of {name} {problem}")


def webhook_url_field(**kwargs) -> fields.Url:
    """An absolute http(s) URL of at most 2,048 characters; where it may point is checked with DNS,
    in the service (core.outbound)."""
    return fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048), **kwargs)


class Wait(fields.Field):
    """`true` (60 s), `false`/0 (no wait) or a number of seconds."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {"oneOf": [
            {"type": "boolean", "description": "true: wait up to 60 s; false: do not wait"},
            {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "description": "seconds to wait"}]})
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if value is True:
            return 60
        if value is False or value is None:
            return 0
        if isinstance(value, int) and 0 <= value <= MAX_WAIT_SECONDS:
            return value
        raise ValidationError(f"must be a boolean or an integer from 0 to {MAX_WAIT_SECONDS}")


class RunCreate(Schema):
    prompt = Text(required=True)
    target_id = Text(validate=validate.Length(1, 200))
    target_kind = fields.String(validate=validate.OneOf(KINDS))
    sandbox_id = Text(validate=validate.Length(1, 200))
    computer_id = Text(validate=validate.Length(1, 200))
    provider = fields.String(load_default=DEFAULT_PROVIDER, validate=validate.OneOf(PROVIDERS))
    command = Text(validate=validate.Length(1, 65536))
    runtime_command = Text(validate=validate.Length(1, 65536))
    model = fields.String(validate=FullMatch(MODEL, error="at most 200 characters of [A-Za-z0-9._:/@-]"))
    cwd = Text(validate=check_cwd)
    timeout = fields.Integer(strict=True, validate=validate.Range(1, 86400))
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    wait = Wait(load_default=0)
    env = fields.Dict(keys=fields.String(), values=env_values(), load_default=dict, validate=check_env)
    target_selector = fields.Dict(keys=Text(validate=validate.Length(1, 63)), values=Text(),
                                  validate=validate.Length(1, 20), metadata={
        "description": "instead of a device: labels a device of the tenant must have (e.g. {\"gpu\": \"a100\"}); "
                       "the run goes to the least loaded matching device (one with a free slot first), "
                       "recorded as its target_id"})
    webhook_url = webhook_url_field(metadata={
        "description": "also send this run's webhook events here, signed with the tenant's per-run secret "
                       "(see /api/v1/webhooks/per-run)"})

    @validates("prompt")
    def _prompt(self, value, **_):
        if not value.strip():
            raise ValidationError("must not be empty")
        limit = current_app.config["SETTINGS"].max_prompt_chars if has_app_context() else 100_000
        if len(value) > limit:
            raise ValidationError(f"at most {limit} characters")

    @validates("metadata")
    def _metadata(self, value, **_):
        if len(value) > 50:
            raise ValidationError("at most 50 keys")
        long_keys = [k for k in value if not 1 <= len(k) <= 40]
        if long_keys:
            raise ValidationError(f"keys must be 1 to 40 characters: {long_keys[0][:50]!r}")
        problem = _unstorable_json(value)  # first: json.dumps itself fails on too deep a value
        if problem:
            raise ValidationError(problem)
        encoded = json.dumps(value, separators=(",", ":"))
        if len(encoded.encode()) > 16 * 1024:
            raise ValidationError("at most 16 KiB of JSON")

    @validates_schema
    def _targets(self, data, **_):
        errors = {}
        given = {k: data[k] for k in ("target_id", "sandbox_id", "computer_id") if k in data}
        if given and "target_selector" in data:
            errors["target_selector"] = [f"give {' or '.join(sorted(given))} or target_selector, not both"]
        elif not given and "target_selector" not in data:
            errors["target_id"] = ["required (or sandbox_id / computer_id, or target_selector)"]
        elif len(set(given.values())) > 1:
            errors["target_id"] = [f"{' and '.join(sorted(given))} disagree"]
        if "sandbox_id" in data and "computer_id" in data:
            errors["target_kind"] = ["sandbox_id and computer_id both given"]
        implied = "sandbox" if "sandbox_id" in data else "computer" if "computer_id" in data else None
        if implied and data.get("target_kind", implied) != implied:
            errors["target_kind"] = [f"{implied}_id given but target_kind is {data['target_kind']}"]
        if "command" in data and "runtime_command" in data and data["command"] != data["runtime_command"]:
            errors["command"] = ["command and runtime_command disagree"]
        command = data.get("command") or data.get("runtime_command")
        if data.get("provider") == "custom" and not command:
            errors["command"] = ["required for provider custom"]
        if data.get("provider") != "custom" and command:
            errors["command"] = [f"only allowed for provider custom, not {data.get('provider')}"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _normalise(self, data, **_):
        kind = data.get("target_kind") or ("sandbox" if "sandbox_id" in data else
                                           "computer" if "computer_id" in data else None)
        target = data.pop("target_id", None) or data.pop("sandbox_id", None) or data.pop("computer_id", None)
        data.pop("sandbox_id", None), data.pop("computer_id", None)
        data["target_id"], data["target_kind"] = target, kind
        data["command"] = data.pop("command", None) or data.pop("runtime_command", None)
        data.pop("runtime_command", None)
        return data


class RunListQuery(Schema):
    target_id = Text()
    target_kind = fields.String(validate=validate.OneOf(KINDS))
    sandbox_id = Text()
    computer_id = Text()
    status = fields.String(validate=validate.OneOf(STATUSES))
    provider = fields.String(validate=validate.OneOf(PROVIDERS))
    created_after = fields.AwareDateTime(default_timezone=None)
    created_before = fields.AwareDateTime(default_timezone=None)
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String()


class WaitQuery(Schema):
    wait = fields.Integer(load_default=0, validate=validate.Range(0, MAX_WAIT_SECONDS))


class EventsQuery(Schema):
    after_seq = fields.Integer(load_default=0, validate=validate.Range(0, MAX_SEQ))
    limit = fields.Integer(load_default=500, validate=validate.Range(1, 1000))


class RunEnvelope(Schema):
    data = fields.Nested(RunOut, required=True)


class RunListEnvelope(Schema):
    data = fields.List(fields.Nested(RunSummary), required=True)
    next_cursor = fields.String(required=True, allow_none=True,
                                metadata={"description": "pass as `cursor` for the next page; null on the last"})


class EventOut(Schema):
    """Output events carry text; status and note events carry an object such as {"status": "running"}
    or {"note": "live output capped at 10000 events"}."""

    seq = fields.Integer(required=True, metadata={"description": "orders the events (global: not contiguous)"})
    type = fields.String(required=True, metadata=one_of(EVENT_TYPES))
    data = fields.Function(lambda e: json.loads(e.data) if e.type in ("status", "note") else e.data, required=True,
                           metadata={"oneOf": [
                               {"type": "string", "description": "stdout and stderr events: a chunk of output"},
                               {"type": "object", "additionalProperties": {},
                                "description": 'status events: {"status": ..., "error"?: ...}; '
                                               'note events: {"note": ...}'}]})
    at = UTCDateTime(required=True)


class EventListEnvelope(Schema):
    data = fields.List(fields.Nested(EventOut), required=True)
