"""One run: every field, its live output (the API's SSE stream module behind the session cookie),
cancel."""
from __future__ import annotations

from flask import current_app, jsonify, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest

from app.api import stream
from app.api.schemas import EventsQuery, RunOut
from app.console import present, session
from app.console.blueprint import blp, tenant_id
from core import db
from core.errors import Conflict
from core.models import TERMINAL
from core.notify import publish, publish_cancel
from core.services import runs as run_service

_RUN_OUT = RunOut()
_EVENTS_QUERY = EventsQuery()


def _redis():
    return current_app.extensions["redis"]


@blp.get("/runs/<run_id>")
def run_page(run_id: str):
    """Every field of the run and its live output."""
    with db.engine().connect() as conn:
        run = run_service.get(conn, tenant_id(), run_id)
    return render_template(
        "console/run.html", run=run, live=run.status not in TERMINAL, present=present,
        queued_for=present.seconds_between(run.created_at, run.started_at or run.finished_at),
        ran_for=present.seconds_between(run.started_at, run.finished_at),
        total=present.seconds_between(run.created_at, run.finished_at),
        curl=present.curl_command(run, request.host_url), cli=present.cli_command(run))


@blp.get("/runs/<run_id>/data")
def run_data(run_id: str):
    """The run as the API returns it; the page refreshes its fields from this on each status change."""
    with db.engine().connect() as conn:
        run = run_service.get(conn, tenant_id(), run_id)
    return jsonify({"data": _RUN_OUT.dump(run)})


@blp.get("/runs/<run_id>/events")
def run_events(run_id: str):
    """The run's events as Server-Sent Events, resumable by Last-Event-ID or `after_seq`."""
    try:
        after_seq = _EVENTS_QUERY.load({"after_seq": request.args.get("after_seq", "0")})["after_seq"]
    except ValidationError:
        raise BadRequest("after_seq: not a sequence number") from None
    with db.engine().connect() as conn:
        run = run_service.get(conn, tenant_id(), run_id)
    after = stream.resume_after(request.headers.get("Last-Event-ID", ""), after_seq)
    return stream.response(_redis(), run.id, after)


@blp.post("/runs/<run_id>/cancel")
def run_cancel(run_id: str):
    """Cancel (the page asked for a confirmation first), then back to the run."""
    try:
        with db.transaction() as conn:
            run = run_service.cancel(conn, tenant_id(), run_id)
    except Conflict as exc:  # it finished meanwhile
        session.current().flash("error", exc.message)
        return redirect(url_for("console.run_page", run_id=run_id))
    publish(_redis(), run.id, "cancel")
    if run.status == "running":
        publish_cancel(_redis(), run.id)
    session.current().flash("ok", "Canceled." if run.status == "canceled" else "Cancel requested: the worker is "
                                                                               "stopping the run.")
    return redirect(url_for("console.run_page", run_id=run.id))
