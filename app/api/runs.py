"""/api/v1/agent-runs: create, list, get (long-poll), cancel, events."""
from __future__ import annotations

from flask import current_app, g, request

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
from core import db, idempotency
from core.messages import Queued, enqueue
from core.notify import publish, publish_cancel
from core.services import runs as run_service
from core.services.waiting import wait_terminal

blp = Blueprint("agent-runs", __name__, url_prefix="/api/v1", description="Agent runs")
# The views take schema instances, not classes: webargs builds a schema (and its fields) per request
# from a class.
_RUN_LIST_QUERY = RunListQuery()


def _ext(name):
    return current_app.extensions[name]


@blp.route("/agent-runs", methods=["POST"])
@blp.arguments(RunCreate())
@blp.response(201, RunEnvelope)
@blp.alt_response(200, schema=RunEnvelope, description="Replayed by Idempotency-Key")
def create_run(data):
    """Create a run (optionally wait for it to finish)."""
    settings = _ext("settings")
    wait = data.pop("wait")

    def create(conn):
        return run_service.create(conn, g.tenant_id, data, request_id(), settings)

    key = request.headers.get("Idempotency-Key")
    if key is None:
        with db.transaction() as conn:
            run = create(conn)
        replayed = False
    else:
        fp = idempotency.fingerprint(settings.secret_key, request.get_json())
        run, replayed = idempotency.create_once(
            _ext("redis"), g.tenant_id, idempotency.validate_key(key), fp, settings.idempotency_ttl_seconds,
            settings.idempotency_wait_seconds, create)
    if not replayed:
        enqueue(_ext("celery"), [Queued(run.id, run.tenant_id, run.target_id)])
    if wait:
        run = wait_terminal(_ext("redis"), run, wait)
    headers = {"Location": f"/api/v1/agent-runs/{run.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return {"data": run}, 200 if replayed else 201, headers


@blp.route("/agent-runs", methods=["GET"])
@blp.arguments(_RUN_LIST_QUERY, location="query", unknown="include")
@blp.response(200, RunListEnvelope)
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
    with db.session() as s:
        rows, next_cursor = run_service.list_runs(s, g.tenant_id, query, metadata)
    return {"data": rows, "next_cursor": next_cursor}


@blp.route("/agent-runs/<run_id>", methods=["GET"])
@blp.arguments(WaitQuery(), location="query")
@blp.response(200, RunEnvelope)
def get_run(query, run_id):
    """Get a run; `?wait=SECONDS` holds the answer until the run is terminal."""
    with db.engine().connect() as conn:
        run = run_service.get(conn, g.tenant_id, run_id)
    if query["wait"]:
        run = wait_terminal(_ext("redis"), run, query["wait"])
    return {"data": run}


@blp.route("/agent-runs/<run_id>/cancel", methods=["POST"])
@blp.response(200, RunEnvelope)
def cancel_run(run_id):
    """Cancel: queued runs end at once, running runs are killed by their worker."""
    with db.transaction() as conn:
        run = run_service.cancel(conn, g.tenant_id, run_id)
    publish(_ext("redis"), run.id, "cancel")
    if run.status == "running":
        publish_cancel(_ext("redis"), run.id)
    return {"data": run}


@blp.route("/agent-runs/<run_id>/events", methods=["GET"])
@blp.arguments(EventsQuery(), location="query")
@blp.response(200, EventListEnvelope)
def run_events(query, run_id):
    """The run's ordered event log; with `Accept: text/event-stream`, a live Server-Sent Events stream."""
    with db.session() as s:
        run = run_service.get(s, g.tenant_id, run_id)
        if request.accept_mimetypes.best == "text/event-stream":
            after = stream.resume_after(request.headers.get("Last-Event-ID", ""), query["after_seq"])
            return stream.response(_ext("redis"), run.id, after)
        rows = run_service.events(s, run.id, query["after_seq"], query["limit"])
    return {"data": rows}
