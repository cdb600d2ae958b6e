"""Device forms -> the API's device bodies, validated by the API's own schemas (DeviceCreate and
DevicePatch), so the console accepts exactly what the API accepts.

Secrets are write-only: the edit form never shows them; a blank secret field keeps what is stored.
"""
from __future__ import annotations

import shlex

from marshmallow import ValidationError
from werkzeug.datastructures import FileStorage, MultiDict

from agentruns.vocabulary import PROVIDERS
from app.api.device_schemas import DeviceCreate, DevicePatch

MAX_KEY_FILE_BYTES = 32768


class FormProblems(Exception):
    """Field -> messages, for the form to show next to its fields."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items()))
        self.fields = fields


def _flatten(messages) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in (messages or {}).items():
        if isinstance(value, dict):
            for sub, msgs in _flatten(value).items():
                out[f"{name}.{sub}"] = msgs
        else:
            out[str(name)] = [str(m) for m in value] if isinstance(value, list) else [str(value)]
    return out


def _private_key(form: MultiDict, files: MultiDict) -> str | None:
    """The pasted key, or the uploaded file's text (an upload wins over an empty text box)."""
    upload: FileStorage | None = files.get("private_key_file")
    if upload is not None and upload.filename:
        data = upload.stream.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            raise FormProblems({"private_key": [f"the key file is over {MAX_KEY_FILE_BYTES} bytes"]})
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise FormProblems({"private_key": ["the key file is not text (expected an OpenSSH or PEM key)"]}) from None
    text = form.get("private_key", "").strip()
    return text + "\n" if text else None


def _int(form: MultiDict, name: str, problems: dict[str, list[str]]) -> int | None:
    value = form.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        problems[name] = ["a whole number"]
        return None


def _common(form: MultiDict, files: MultiDict, problems: dict[str, list[str]]) -> dict:
    body: dict = {}
    for name in ("name", "host", "username", "host_key", "default_cwd"):
        value = form.get(name, "").strip()
        body[name] = value or None
    for name in ("port", "max_concurrent_runs"):
        number = _int(form, name, problems)
        if number is not None:
            body[name] = number
    body["trust_on_first_use"] = form.get("trust_on_first_use") == "on"
    body["login_shell"] = form.get("login_shell") == "on"
    try:
        key = _private_key(form, files)
    except FormProblems as exc:
        problems.update(exc.fields)
        key = None
    if key:
        body["private_key"] = key
    password = form.get("password", "")
    if password:
        body["password"] = password
    return body


def create_body(form: MultiDict, files: MultiDict) -> dict:
    """A DeviceCreate body from the add form; FormProblems when it is not acceptable."""
    problems: dict[str, list[str]] = {}
    body = _common(form, files, problems)
    body = {k: v for k, v in body.items() if v is not None}
    for name in ("id", "kind", "driver"):
        if form.get(name, "").strip():
            body[name] = form[name].strip()
    if problems:
        raise FormProblems(problems)
    try:
        return DeviceCreate().load(body)
    except ValidationError as exc:
        raise FormProblems(_flatten(exc.messages)) from None


def _env_lines(text: str, where: str, problems: dict[str, list[str]]) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                problems.setdefault(where, []).append("write one NAME=VALUE per line")
                continue
            env[name.strip()] = value
    return env


def provider_changes(form: MultiDict, current: dict[str, dict], current_env: dict[str, dict],
                     problems: dict[str, list[str]]) -> dict[str, dict | None]:
    """The `providers` of a PATCH: only providers whose fields changed, their stored env kept unless
    new variables were given or clearing was asked for (a PATCH replaces a provider's settings whole)."""
    changes: dict[str, dict | None] = {}
    for name in PROVIDERS:
        prefix = f"provider.{name}."
        executable = form.get(prefix + "executable", "").strip()
        try:
            extra_args = shlex.split(form.get(prefix + "extra_args", ""))
        except ValueError as exc:
            problems[prefix + "extra_args"] = [f"not shell words: {exc}"]
            continue
        new_env = _env_lines(form.get(prefix + "env", ""), prefix + "env", problems)
        clear_env = form.get(prefix + "clear_env") == "on"
        old = current.get(name, {})
        if (executable == (old.get("executable") or "") and extra_args == list(old.get("extra_args") or [])
                and not new_env and not clear_env):
            continue
        settings: dict = {}
        if executable:
            settings["executable"] = executable
        if extra_args:
            settings["extra_args"] = extra_args
        env = {} if clear_env else dict(current_env.get(name, {}))
        env.update(new_env)
        if env:
            settings["env"] = env
        changes[name] = settings or None
    return changes


def patch_body(form: MultiDict, files: MultiDict, current: dict[str, dict], current_env: dict[str, dict]) -> dict:
    """A DevicePatch body from the edit form; FormProblems when it is not acceptable."""
    problems: dict[str, list[str]] = {}
    body = _common(form, files, problems)
    if form.get("clear_password") == "on":
        body["password"] = None
    providers = provider_changes(form, current, current_env, problems)
    if providers:
        body["providers"] = providers
    if problems:
        raise FormProblems(problems)
    try:
        return DevicePatch().load(body)
    except ValidationError as exc:
        raise FormProblems(_flatten(exc.messages)) from None
