"""The console's blueprint and what every console request goes through: the session, sign-in
required (but for the sign-in page), the CSRF check on every POST, security headers, error pages."""
from __future__ import annotations

import logging
import shlex
import uuid
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from app.api.errors import domain_status, request_id
from app.console import csrf, session
from core.errors import DomainError

log = logging.getLogger("agentruns.console")

blp = Blueprint("console", __name__)

PUBLIC_ENDPOINTS = frozenset({"console.sign_in", "console.sign_in_submit"})
# Read by scripts, not people: they answer 401 rather than redirect to the sign-in page.
DATA_ENDPOINTS = frozenset({"console.runs_feed", "console.run_events", "console.run_data"})
# Scripts only from this origin; styles too (no inline style attributes in the templates); no framing.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Swagger UI sets style attributes from its scripts; its scripts still come only from here.
DOCS_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def tenant_id() -> uuid.UUID:
    """The signed-in viewer's tenant (the guard below has made sure there is one)."""
    return g.viewer.tenant_id


def local_path(target: str | None, default: str = "/runs") -> str:
    """`target` if it is a path on this site, else `default`: a `next` parameter never leaves the site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(ch) < 0x20 or ch == "\\" for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


@blp.before_request
def _guard():
    try:
        state = g.console_session = session.load()
        g.viewer = session.viewer(state)
        if request.method == "POST":
            csrf.require(state)
    except session.ConsoleDisabled:
        return render_template("console/error.html", title="Console unavailable", code=503,
                               message="The console needs AGENTRUNS_SECRET_KEY to sign its sessions."), 503
    except csrf.CsrfRefused:
        return render_template("console/error.html", title="Refused", code=403,
                               message="This form has expired or did not come from this console. "
                                       "Go back, reload the page and try again."), 403
    if request.endpoint in PUBLIC_ENDPOINTS or g.viewer is not None:
        return None
    if request.endpoint in DATA_ENDPOINTS:
        return jsonify({"error": {"code": "unauthorized", "message": "sign in again"}}), 401
    if state.key_id:
        state.key_id, state.dirty = None, True
        state.flash("error", "Your session ended (signed out, expired or its API key was revoked). Sign in again.")
    wanted = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("console.sign_in", next=local_path(wanted, "/runs")))


@blp.after_request
def _finish(response: Response) -> Response:
    state = g.get("console_session")
    if state is not None:
        try:
            session.save(state, response)
        except session.ConsoleDisabled:
            pass
    secure_headers(response, PAGE_CSP)
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"  # pages show tenant data
    return response


def secure_headers(response: Response, csp: str) -> Response:
    """No framing, this CSP, no MIME sniffing, no referrer to other sites."""
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@blp.app_context_processor
def _page_context():
    state = g.get("console_session")
    if state is None:
        return {}
    try:
        token = csrf.token(state)
    except session.ConsoleDisabled:
        token = ""
    return {"csrf_token": token, "viewer": g.get("viewer"), "notice": state.pop_notice()}


@blp.app_template_filter("shell_join")
def _shell_join(words: list[str]) -> str:
    return shlex.join(words)


@blp.errorhandler(DomainError)
def _domain_error(err: DomainError):
    status = domain_status(err)
    title = {404: "Not found", 409: "Conflict", 422: "Not accepted"}.get(status, "Error")
    return render_template("console/error.html", title=title, code=status, message=err.message), status


@blp.errorhandler(HTTPException)
def _http_error(err: HTTPException):
    code = err.code or 500
    return render_template("console/error.html", title=err.name, code=code, message=err.description), code


@blp.errorhandler(Exception)
def _unexpected(err: Exception):
    log.exception("console error request_id=%s", request_id())
    return render_template("console/error.html", title="Something went wrong", code=500,
                           message=f"The error was logged with request id {request_id()}."), 500
