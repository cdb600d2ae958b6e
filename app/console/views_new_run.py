"""New run: the form (filled in from a run for "Run again"), created exactly once per form.

The form carries an Idempotency-Key generated when it is rendered, and the create goes through the
same path as POST /api/v1/agent-runs (core.idempotency.create_once, core.services.runs.create,
core.messages.enqueue): a double submit, or a resubmit after a lost answer, makes one run.
"""
from __future__ import annotations

import json
import uuid

from flask import current_app, redirect, render_template, request, url_for
from marshmallow import ValidationError

from agentruns.vocabulary import DEFAULT_PROVIDER, PROVIDERS
from app.api.errors import request_id
from app.api.schemas import RunCreate
from app.console.blueprint import blp, tenant_id
from core import db, idempotency
from core.errors import DomainError
from core.messages import enqueue
from core.services import devices as device_service
from core.services import runs as run_service

FIELDS = ("prompt", "target_id", "provider", "command", "model", "cwd", "timeout", "metadata")


def _form_from_run(run_id: str) -> dict[str, str]:
    with db.engine().connect() as conn:
        run = run_service.get(conn, tenant_id(), run_id)
    metadata = "\n".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in (run.metadata_ or {}).items())
    return {"prompt": run.prompt, "target_id": run.target_id, "provider": run.provider, "command": run.command or "",
            "model": run.model or "", "cwd": run.cwd, "timeout": str(run.timeout), "metadata": metadata}


def _render(form: dict[str, str], errors: dict[str, list[str]] | None = None, status: int = 200):
    with db.session() as s:
        devices = [(d.id, d.kind, d.name) for d in device_service.list_all(s, tenant_id())]
    return render_template("console/new_run.html", form=form, errors=errors or {}, devices=devices,
                           providers=PROVIDERS), status


@blp.get("/runs/new")
def new_run():
    """The new-run form; `?from=RUN_ID` fills it in from that run."""
    source = request.args.get("from")
    form = _form_from_run(source) if source else {"provider": DEFAULT_PROVIDER}
    form["idempotency_key"] = f"console-{uuid.uuid4()}"
    return _render(form)


def _body(form: dict[str, str]) -> tuple[dict, dict[str, list[str]]]:
    """The API's request body from the form's strings, and the problems found on the way."""
    body: dict = {"prompt": form.get("prompt", ""), "target_id": form.get("target_id", ""),
                  "provider": form.get("provider") or DEFAULT_PROVIDER}
    errors: dict[str, list[str]] = {}
    for name in ("model", "cwd"):
        if form.get(name, "").strip():
            body[name] = form[name].strip()
    if body["provider"] == "custom" and form.get("command", "").strip():
        body["command"] = form["command"]
    if form.get("timeout", "").strip():
        try:
            body["timeout"] = int(form["timeout"])
        except ValueError:
            errors["timeout"] = ["a whole number of seconds"]
    metadata = {}
    for line in form.get("metadata", "").splitlines():
        if line.strip():
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                errors.setdefault("metadata", []).append(f"{line.strip()!r}: write one KEY=VALUE per line")
            metadata[key.strip()] = value.strip()
    body["metadata"] = metadata
    return body, errors


@blp.post("/runs/new")
def create_run():
    """Create the run once per Idempotency-Key, then show it."""
    form = {name: request.form.get(name, "") for name in (*FIELDS, "idempotency_key")}
    body, errors = _body(form)
    if errors:
        return _render(form, errors, 422)
    try:
        data = RunCreate().load(body)
    except ValidationError as exc:
        return _render(form, {k: v if isinstance(v, list) else [str(v)]
                              for k, v in exc.messages.items()}, 422)
    data.pop("wait")
    settings = current_app.extensions["settings"]
    try:
        run, replayed = idempotency.create_once(
            current_app.extensions["redis"], tenant_id(), idempotency.validate_key(form["idempotency_key"]),
            idempotency.fingerprint(settings.secret_key, body), settings.idempotency_ttl_seconds,
            settings.idempotency_wait_seconds,
            lambda conn: run_service.create(conn, tenant_id(), data, request_id(), settings))
    except DomainError as exc:
        fields = exc.details.get("fields") or {"_form": [exc.message]}
        return _render(form, fields, 422)
    if not replayed:
        enqueue(current_app.extensions["celery"], [run_service.queued(run)])
    return redirect(url_for("console.run_page", run_id=run.id))
