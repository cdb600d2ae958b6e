"""Webhook forms -> the API's webhook bodies, validated by the API's own schemas (WebhookCreate and
WebhookPatch), so the console accepts exactly what the API accepts.

The form's field names are the API's (`filters.target_id`, ...), so that the schemas' messages land
next to the field they are about. An edit sends only what changed: saving a description neither
checks the URL again (a DNS lookup) nor restarts a failing endpoint's clock (`enabled`).
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from agentruns.vocabulary import WEBHOOK_ALL_EVENTS, WEBHOOK_EVENT_TYPES
from app.api.webhook_schemas import WebhookCreate, WebhookPatch
from app.console.device_forms import FormProblems, _flatten

EVENT_CHOICES = (WEBHOOK_ALL_EVENTS, *WEBHOOK_EVENT_TYPES)
TEXT_FIELDS = ("url", "description", "filters.target_id", "filters.provider", "filters.metadata")

__all__ = ["EVENT_CHOICES", "FormProblems", "create_body", "form_of", "metadata_text", "patch_body", "typed"]


def _shown(value) -> str:
    """A metadata filter value as the form shows it: strings as they are, numbers and booleans as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def metadata_text(metadata: dict) -> str:
    """The metadata filter as KEY=VALUE lines."""
    return "\n".join(f"{key}={_shown(value)}" for key, value in (metadata or {}).items())


def form_of(endpoint: dict) -> dict:
    """What the edit form shows for an endpoint (the API's shape, from webhook_service.to_out)."""
    filters = endpoint["filters"]
    return {"url": endpoint["url"] or "", "description": endpoint["description"] or "",
            "events": list(endpoint["events"]), "enabled": endpoint["enabled"],
            "filters.target_id": filters["target_id"] or "", "filters.provider": filters["provider"] or "",
            "filters.metadata": metadata_text(filters["metadata"])}


def typed(form: MultiDict) -> dict:
    """The form as typed, to show it again with its errors."""
    out: dict = {name: form.get(name, "") for name in TEXT_FIELDS}
    out["events"] = form.getlist("events")
    out["enabled"] = form.get("enabled") == "on"
    return out


def _metadata(text: str, current: dict, problems: dict[str, list[str]]) -> dict:
    """KEY=VALUE lines -> a metadata filter. Values are text; a line left as the form showed a stored
    number or boolean keeps that value (JSONB containment tells 1 from "1")."""
    kept = {f"{key}={_shown(value)}": (key, value) for key, value in (current or {}).items()}
    out: dict = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.strip() in kept:
            key, value = kept[line.strip()]
        else:
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not key:
                problems.setdefault("filters.metadata", []).append(f"{line.strip()!r}: write one KEY=VALUE per line")
                continue
        out[key] = value
    return out


def _url(form: MultiDict, problems: dict[str, list[str]]) -> str:
    """The URL as typed; a missing one or another scheme (ftp:, a bare host) gets a plainer message than
    the schema's "Not a valid URL"."""
    url = form.get("url", "").strip()
    if not url:
        problems["url"] = ["enter the URL of your receiver"]
    else:
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as exc:
            problems["url"] = [f"not a valid URL: {exc}"]
            return url
        if scheme not in ("http", "https"):
            problems["url"] = ["must be an https URL, like https://example.com/agentruns/events"]
    return url


def _events(form: MultiDict, problems: dict[str, list[str]]) -> list[str]:
    events = [e for e in form.getlist("events") if e]
    if not events:
        problems["events"] = ["choose at least one event type"]
    elif WEBHOOK_ALL_EVENTS in events:
        events = [WEBHOOK_ALL_EVENTS]  # all of them; the others add nothing
    return events


def _filters(form: MultiDict, current: dict, problems: dict[str, list[str]]) -> dict:
    return {"target_id": form.get("filters.target_id", "").strip() or None,
            "provider": form.get("filters.provider", "").strip() or None,
            "metadata": _metadata(form.get("filters.metadata", ""), current, problems)}


def _load(schema, body: dict) -> dict:
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise FormProblems(_flatten(exc.messages)) from None


def create_body(form: MultiDict) -> dict:
    """A WebhookCreate body from the add form; FormProblems when it is not acceptable."""
    problems: dict[str, list[str]] = {}
    body = {"url": _url(form, problems), "events": _events(form, problems),
            "filters": _filters(form, {}, problems),
            "description": form.get("description", "").strip() or None}
    if problems:
        raise FormProblems(problems)
    return _load(WebhookCreate(), body)


def patch_body(form: MultiDict, endpoint: dict) -> dict:
    """A WebhookPatch body with what the edit form changed; FormProblems when it is not acceptable."""
    problems: dict[str, list[str]] = {}
    body: dict = {}
    url = _url(form, problems)
    if url and url != (endpoint["url"] or ""):
        body["url"] = url
    events = _events(form, problems)
    if sorted(events) != sorted(endpoint["events"]):
        body["events"] = events
    filters = _filters(form, endpoint["filters"]["metadata"], problems)
    if filters != endpoint["filters"]:
        body["filters"] = filters
    description = form.get("description", "").strip() or None
    if description != endpoint["description"]:
        body["description"] = description
    enabled = form.get("enabled") == "on"
    if enabled != endpoint["enabled"]:
        body["enabled"] = enabled
    if problems:
        raise FormProblems(problems)
    return _load(WebhookPatch(), body)
