"""Device schemas. Secrets (private_key, password, env, provider env) are load-only: never dumped."""
from __future__ import annotations

from flask import current_app, has_app_context
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from agentruns.vocabulary import KINDS, PROVIDERS
from app.api.schemas import FullMatch, Text, UTCDateTime, check_cwd, check_env, env_values, nullable_nested, one_of
from core.messages import pool_allowed

DRIVERS = ("ssh", "local")
DEVICE_ID = FullMatch(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$",
                      error="1-200 characters of [A-Za-z0-9._:@-], starting with a letter or digit")


def check_host(value: str) -> None:
    # A connection resolves the name through the idna codec, which refuses an empty or over-long
    # label with a UnicodeError that no driver expects: refuse the name here instead.
    try:
        value.encode("idna")
    except UnicodeError:
        raise ValidationError("not a valid host name or address") from None


class ProviderSettingsIn(Schema):
    executable = Text(validate=validate.Length(1, 4096))
    extra_args = fields.List(Text(validate=validate.Length(0, 4096)), validate=validate.Length(max=64))
    env = fields.Dict(keys=fields.String(), values=env_values(), validate=check_env)


# The OpenAPI description of a provider's settings in a device body (check_providers loads them with
# ProviderSettingsIn): documentation only, as the values are taken raw.
_PROVIDER_SETTINGS_IN = {
    "type": "object",
    "description": "settings for the provider named by the key (one of the provider list); null removes them",
    "properties": {
        "executable": {"type": "string", "minLength": 1, "maxLength": 4096},
        "extra_args": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 4096}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def check_providers(value: dict) -> None:
    unknown = sorted(set(value) - set(PROVIDERS))
    if unknown:
        raise ValidationError(f"unknown provider(s): {', '.join(unknown)}")
    errors = {}
    for name, settings in value.items():
        if settings is None:  # PATCH: remove this provider's settings
            continue
        try:
            ProviderSettingsIn().load(settings if isinstance(settings, dict) else {"_": settings})
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)


class _DeviceFields(Schema):
    kind = fields.String(validate=validate.OneOf(KINDS))
    name = Text(validate=validate.Length(1, 200), allow_none=True)
    driver = fields.String(validate=validate.OneOf(DRIVERS))
    host = Text(validate=[validate.Length(1, 255), check_host], allow_none=True)
    port = fields.Integer(strict=True, validate=validate.Range(1, 65535))
    username = fields.String(validate=FullMatch(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$"), allow_none=True)
    private_key = Text(validate=validate.Length(1, 32768), allow_none=True)
    password = Text(validate=validate.Length(1, 1024), allow_none=True)
    host_key = Text(validate=validate.Length(1, 16384), allow_none=True)
    trust_on_first_use = fields.Boolean()
    login_shell = fields.Boolean()
    labels = fields.Dict(keys=Text(validate=validate.Length(1, 63)), values=Text())
    pool = fields.String(validate=FullMatch(r"^[A-Za-z0-9_.-]{1,64}$"), metadata={
        "description": "the worker pool that serves it (`agentruns worker --pool NAME`); default `default`. "
                       "Changing it sends the device's queued runs to the new pool"})
    max_concurrent_runs = fields.Integer(strict=True, validate=validate.Range(1, 1000))
    default_cwd = Text(validate=check_cwd, allow_none=True)
    env = fields.Dict(keys=fields.String(), values=env_values(), validate=check_env)
    providers = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True, metadata=_PROVIDER_SETTINGS_IN),
                            validate=check_providers)

    @validates("pool")
    def _pool(self, value, **_):
        allowed = current_app.config["SETTINGS"].pools if has_app_context() else "*"
        if not pool_allowed(value, allowed):
            raise ValidationError(f"{value!r} is not a worker pool of this server; the operator lists them "
                                  "in AGENTRUNS_POOLS")


class DeviceCreate(_DeviceFields):
    id = fields.String(validate=DEVICE_ID)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    driver = fields.String(load_default="ssh", validate=validate.OneOf(DRIVERS))

    @validates_schema
    def _ssh_needs(self, data, **_):
        if data.get("driver", "ssh") != "ssh":
            return
        errors = {}
        for name in ("host", "username"):
            if not data.get(name):
                errors[name] = ["required for driver ssh"]
        if not data.get("private_key") and not data.get("password"):
            errors["private_key"] = ["private_key or password is required for driver ssh"]
        if not data.get("host_key") and not data.get("trust_on_first_use"):
            errors["host_key"] = ["required for driver ssh unless trust_on_first_use is true"]
        if errors:
            raise ValidationError(errors)


class DevicePatch(_DeviceFields):
    pass


# What DeviceOut.providers holds per provider: the non-secret settings, and the names of its env.
_PROVIDER_SETTINGS_OUT = {
    "type": "object",
    "properties": {
        "executable": {"type": "string"},
        "extra_args": {"type": "array", "items": {"type": "string"}},
        "env_names": {"type": "array", "items": {"type": "string"},
                      "description": "the names of the provider's env variables (their values are write-only)"},
    },
    "additionalProperties": False,
}


class DeviceOut(Schema):
    # Dump only: `required=True` documents that the field is always sent, allow_none that it may be null.
    id = fields.String(required=True)
    kind = fields.String(required=True, metadata=one_of(KINDS))
    name = fields.String(required=True, allow_none=True)
    driver = fields.String(required=True, metadata=one_of(DRIVERS))
    host = fields.String(required=True, allow_none=True)
    port = fields.Integer(required=True)
    username = fields.String(required=True, allow_none=True)
    host_key = fields.String(required=True, allow_none=True)
    trust_on_first_use = fields.Boolean(required=True)
    login_shell = fields.Boolean(required=True)
    labels = fields.Dict(required=True, keys=fields.String(), values=fields.String())
    pool = fields.String(required=True)
    max_concurrent_runs = fields.Integer(required=True)
    default_cwd = fields.String(required=True, allow_none=True)
    providers = fields.Dict(required=True, metadata={
        "description": "per provider (a key of the provider list): its settings and the names of its env",
        "additionalProperties": _PROVIDER_SETTINGS_OUT})
    has_private_key = fields.Boolean(required=True)
    has_password = fields.Boolean(required=True)
    env_names = fields.List(fields.String(), required=True)
    created_at = UTCDateTime(required=True)
    updated_at = UTCDateTime(required=True)


class DeviceEnvelope(Schema):
    data = fields.Nested(DeviceOut, required=True)


class DeviceListEnvelope(Schema):
    data = fields.List(fields.Nested(DeviceOut), required=True)


class DeviceTestError(Schema):
    """Why a device test failed."""

    code = fields.String(required=True, metadata={
        "description": "machine-readable, e.g. device_unreachable, auth_failed, host_key_mismatch"})
    message = fields.String(required=True)


class DeviceTest(Schema):
    ok = fields.Boolean(required=True)
    latency_ms = fields.Float(required=True, allow_none=True)
    host_key = fields.String(required=True, allow_none=True)
    error = nullable_nested(DeviceTestError, required=True)


class DeviceTestEnvelope(Schema):
    data = fields.Nested(DeviceTest, required=True)
