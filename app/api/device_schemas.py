"""Device schemas. Secrets (private_key, password, env, provider env) are load-only: never dumped."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from agentruns.vocabulary import KINDS, PROVIDERS
from app.api.schemas import FullMatch, Text, UTCDateTime, check_cwd, check_env

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
    env = fields.Dict(keys=fields.String(), values=fields.Raw(), validate=check_env)


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
    driver = fields.String(validate=validate.OneOf(("ssh", "local")))
    host = Text(validate=[validate.Length(1, 255), check_host], allow_none=True)
    port = fields.Integer(strict=True, validate=validate.Range(1, 65535))
    username = fields.String(validate=FullMatch(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$"), allow_none=True)
    private_key = Text(validate=validate.Length(1, 32768), allow_none=True)
    password = Text(validate=validate.Length(1, 1024), allow_none=True)
    host_key = Text(validate=validate.Length(1, 16384), allow_none=True)
    trust_on_first_use = fields.Boolean()
    login_shell = fields.Boolean()
    labels = fields.Dict(keys=Text(validate=validate.Length(1, 63)), values=Text())
    max_concurrent_runs = fields.Integer(strict=True, validate=validate.Range(1, 1000))
    default_cwd = Text(validate=check_cwd, allow_none=True)
    env = fields.Dict(keys=fields.String(), values=fields.Raw(), validate=check_env)
    providers = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), validate=check_providers)


class DeviceCreate(_DeviceFields):
    id = fields.String(validate=DEVICE_ID)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    driver = fields.String(load_default="ssh", validate=validate.OneOf(("ssh", "local")))

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


class DeviceOut(Schema):
    # allow_none documents `nullable` in the spec.
    id = fields.String()
    kind = fields.String()
    name = fields.String(allow_none=True)
    driver = fields.String()
    host = fields.String(allow_none=True)
    port = fields.Integer()
    username = fields.String(allow_none=True)
    host_key = fields.String(allow_none=True)
    trust_on_first_use = fields.Boolean()
    login_shell = fields.Boolean()
    labels = fields.Dict()
    max_concurrent_runs = fields.Integer()
    default_cwd = fields.String(allow_none=True)
    providers = fields.Dict()
    has_private_key = fields.Boolean()
    has_password = fields.Boolean()
    env_names = fields.List(fields.String())
    created_at = UTCDateTime()
    updated_at = UTCDateTime()


class DeviceEnvelope(Schema):
    data = fields.Nested(DeviceOut)


class DeviceListEnvelope(Schema):
    data = fields.List(fields.Nested(DeviceOut))


class DeviceTest(Schema):
    ok = fields.Boolean()
    latency_ms = fields.Float(allow_none=True)
    host_key = fields.String(allow_none=True)
    error = fields.Dict(allow_none=True)


class DeviceTestEnvelope(Schema):
    data = fields.Nested(DeviceTest)
