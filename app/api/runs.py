"""/api/v1/agent-runs: create, list, get (long-poll), cancel, events."""
from __future__ import annotations

from contextlib import nullcontext

from flask import current_app, g, request

from app import request_db
from app.api import stream
from app.api.errors import APIError, request_id
from app.api.parser import Blueprint
from app.api.schemas import (
    EventListEnvelope,
    EventsQuery,
    RunCreate,
    RunEnvelope,
    RunListEnvelope,
    RunListQuery,
    WaitQuery,
    unstorable,
)
from core import idempotency
from core.models import TERMINAL
from core.notify import publish, publish_cancel
from core.services import runs as run_service
from core.services.waiting import wait_terminal

blp = Blueprint("agent-runs", __name__, url_prefix="/api/v1", description="Agent runs")
# The views take schema instances, not classes: webargs builds a schema (and its fields) per request
# from a class.
_RUN_LIST_QUERY = RunListQuery()

# OpenAPI documentation only: the views read these themselves.
_LOCATION = {"description": "The run's path, /api/v1/agent-runs/{id}.", "required": True,
             "schema": {"type": "string", "format": "uri-reference"}}
_IDEMPOTENCY_KEY = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]{1,255}$"},
    "description": "Makes a retried create safe: within AGENTRUNS_IDEMPOTENCY_TTL_SECONDS, a request of the "
                   "tenant with the same key and body answers 200 with the run the first one created (and "
                   "Idempotent-Replayed: true); the same key with another body is a 422 "
                   "(idempotency_key_reused). 1 to 255 printable ASCII characters.",
}
_METADATA_FILTER = {
    "in": "query", "name": "metadata", "required": False, "style": "deepObject", "explode": True,
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
    "description": "metadata[KEY]=VALUE: only runs whose metadata has the top-level KEY equal to VALUE, the "
                   "string or the JSON number, boolean or null it spells; several all apply.",
    "example": {"team": "infra"},
}
_LAST_EVENT_ID = {
    "in": "header", "name": "Last-Event-ID", "required": False, "schema": {"type": "string"},
    "description": "With `Accept: text/event-stream`: resume after this seq (the id of the last event "
                   "received, which EventSource resends when it reconnects), in place of after_seq. A value "
                   "that is not a seq is ignored.",
}
_EVENT_STREAM = {
    "description": "The events after after_seq, at most `limit`, oldest first. With `Accept: text/event-stream`, "
                   "a Server-Sent Events stream instead: the events after after_seq (or Last-Event-ID), then "
                   "live ones, until the run's terminal status event.",
    "content": {"text/event-stream": {
        "schema": {"type": "string",
                   "description": "A `retry: 1000` line, then per event `id: <seq>`, `event: <type>` and "
                                  "`data: <the event as JSON, an EventOut>`; `: keepalive` comments every 15 s."},
        "example": 'retry: 1000\n\nid: 42\nevent: status\ndata: {"seq": 42, "type": "status", '
                   '"data": {"status": "running"}, "at": "2026-01-01T12:00:00.000000Z"}\n\n',
    }},
}


def _ext(name):
    return current_app.extensions[name]


def _enqueue(run) -> None:
    _ext("publisher").enqueue([run_service.queued(run)])


def _create_in_one_statement(data: dict, settings):
    """The run, when nothing in it needs a transaction: one round trip on the request's autocommit
    connection in place of four (BEGIN, the device's SELECT, INSERT, COMMIT). None: create() decides."""
    if not run_service.one_statement_will_do(data, settings):
        return None
    return run_service.create_in_one_statement(request_db.connection(), g.tenant_id, data, request_id(), settings)


@blp.route("/agent-runs", methods=["POST"])
@blp.arguments(RunCreate())
@blp.response(201, RunEnvelope, headers={"Location": _LOCATION})
@blp.alt_response(200, schema=RunEnvelope, description="Replayed by Idempotency-Key: the run the first request "
                  "with this key created", headers={"Location": _LOCATION, "Idempotent-Replayed": {
                      "required": True, "schema": {"type": "string", "enum": ["true"]}}})
@blp.doc_parameters(_IDEMPOTENCY_KEY)
@blp.errors({409: "idempotency_key_in_use: a request with this Idempotency-Key is still being processed; "
                  "retry after Retry-After seconds.",
             422: "validation_error: the body failed validation (error.details.fields names the fields), or "
                  "its target is no device of this tenant; idempotency_key_reused: this Idempotency-Key came "
                  "with another body."}, retry_after=(409,))
def create_run(data):
    """Create a run (optionally wait for it to finish)."""
    settings = _ext("settings")
    wait = data.pop("wait")

    def create(conn):
        return run_service.create(conn, g.tenant_id, data, request_id(), settings)

    key = request.headers.get("Idempotency-Key")
    if key is None:
        run = _create_in_one_statement(data, settings)
        if run is None:  # it needs a transaction, or it is refused (create raises the error)
            with request_db.transaction() as conn:
                run = create(conn)
        replayed = False
    else:
        fp = idempotency.fingerprint(settings.secret_key, request.get_json())
        run, replayed = idempotency.create_once(
            _ext("redis"), g.tenant_id, idempotency.validate_key(key), fp, settings.idempotency_ttl_seconds,
            settings.idempotency_wait_seconds, create, connect=lambda: nullcontext(request_db.connection()),
            transaction=request_db.transaction)
    if wait:
        request_db.release()  # not held while waiting
        run = wait_terminal(_ext("redis"), run, wait, enqueue=None if replayed else _enqueue)
    elif not replayed:
        _enqueue(run)
    if not replayed:
        g.created_run = (str(run.id), run.target_id)  # for the request log (app.request_logs)
    headers = {"Location": f"/api/v1/agent-runs/{run.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return {"data": run}, 200 if replayed else 201, headers


@blp.route("/agent-runs", methods=["GET"])
@blp.arguments(_RUN_LIST_QUERY, location="query", unknown="include")
@blp.response(200, RunListEnvelope)
@blp.doc_parameters(_METADATA_FILTER)
@blp.errors({422: "validation_error: a filter failed validation, a query parameter is unknown, the cursor is not "
                  "one this API returned, or target_id, sandbox_id and computer_id disagree."})
def list_runs(query):
    """List runs, newest first; follow next_cursor for more."""
    metadata = {k[len("metadata["):-1]: v for k, v in request.args.items()
                if k.startswith("metadata[") and k.endswith("]") and len(k) > len("metadata[]")}
    unknown = [k for k in query if k not in _RUN_LIST_QUERY.fields and not k.startswith("metadata[")]
    if unknown:
        raise APIError(422, "validation_error", f"{', '.join(unknown)}: unknown query parameter",
                       {"fields": {k: ["unknown query parameter"] for k in unknown}})
    bad = {f"metadata[{k}]": [problem] for k, v in metadata.items() if (problem := unstorable(k) or unstorable(v))}
    if bad:
        raise APIError(422, "validation_error", "; ".join(f"{k}: {v[0]}" for k, v in bad.items()), {"fields": bad})
    rows, next_cursor = run_service.list_runs(request_db.connection(), g.tenant_id, query, metadata)
    return {"data": rows, "next_cursor": next_cursor}


@blp.route("/agent-runs/<run_id>", methods=["GET"])
@blp.arguments(WaitQuery(), location="query")
@blp.response(200, RunEnvelope)
@blp.errors({404: "not_found: no such run in this tenant (also for an id that is no UUID)."})
def get_run(query, run_id):
    """Get a run; `?wait=SECONDS` holds the answer until the run is terminal."""
    run = run_service.get(request_db.connection(), g.tenant_id, run_id)
    if query["wait"] and run.status not in TERMINAL:
        request_db.release()  # not held while waiting
        run = wait_terminal(_ext("redis"), run, query["wait"])
    return {"data": run}


@blp.route("/agent-runs/<run_id>/cancel", methods=["POST"])
@blp.response(200, RunEnvelope)
@blp.errors({404: "not_found: no such run in this tenant.",
             409: "run_finished: the run already succeeded or failed (canceling a canceled run answers 200)."})
def cancel_run(run_id):
    """Cancel: queued runs end at once, running runs are killed by their worker."""
    with request_db.transaction() as conn:
        run = run_service.cancel(conn, g.tenant_id, run_id)
    publish(_ext("redis"), run.id, "cancel")
    if run.status == "running":
        publish_cancel(_ext("redis"), run.id)
    return {"data": run}


@blp.route("/agent-runs/<run_id>/events", methods=["GET"])
@blp.arguments(EventsQuery(), location="query")
@blp.response(200, EventListEnvelope)
@blp.doc(responses={200: _EVENT_STREAM})
@blp.doc_parameters(_LAST_EVENT_ID)
@blp.errors({404: "not_found: no such run in this tenant."})
def run_events(query, run_id):
    """The run's ordered event log; with `Accept: text/event-stream`, a live Server-Sent Events stream.

    Send `Accept: text/event-stream` (as the preferred type) for the stream, resumable with
    Last-Event-ID; otherwise the answer is one page of the log as JSON.
    """
    conn = request_db.connection()
    run = run_service.get(conn, g.tenant_id, run_id)
    if request.accept_mimetypes.best == "text/event-stream":
        request_db.release()  # not held while streaming
        after = stream.resume_after(request.headers.get("Last-Event-ID", ""), query["after_seq"])
        return stream.response(_ext("redis"), run.id, after)
    return {"data": run_service.events(conn, run.id, query["after_seq"], query["limit"])}
