"""Bearer API keys -> tenant and role, the content-type check, an optional per-tenant rate limit, and
`operator_required` for the operator's endpoints."""
from __future__ import annotations

import functools
import time

from flask import current_app, g, request

from agentruns.vocabulary import OPERATOR_ROLE
from app import request_db
from app.api.errors import APIError
from app.api.parser import Blueprint
from core.services.keys import KeyRefused, authenticate


def _rate_limit(tenant_id) -> None:
    limit = current_app.config["SETTINGS"].rate_limit_per_minute
    if not limit:
        return
    window = int(time.time() // 60)
    key = f"agentruns:rl:{tenant_id}:{window}"
    try:
        r = current_app.extensions["redis"]
        count = r.incr(key)
        if count == 1:
            r.expire(key, 120)
    except Exception:  # a limiter outage must not take the API down
        return
    if count > limit:
        retry = str(60 - int(time.time()) % 60)
        raise APIError(429, "rate_limited", f"more than {limit} requests this minute", headers={"Retry-After": retry})


def authenticate_request():
    """Resolve the Bearer key to g.tenant_id, g.key_id and g.key_role, or answer 401 (before any validation).

    The key is looked up in PostgreSQL on every request (no cache): a revoked or expired key is refused
    at once on every API process. The lookup uses the request's connection (app.request_db), which
    the runs views then use too: one pool checkout per request (see guard_api's `sharing`).
    """
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise APIError(401, "unauthorized", "missing API key: send `Authorization: Bearer <key>`",
                       headers={"WWW-Authenticate": "Bearer"})
    # A bare connection, not an ORM session: this runs on every API request.
    try:
        caller = authenticate(request_db.connection(), raw.strip())
    except KeyRefused as exc:
        raise APIError(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    g.tenant_id, g.key_id, g.key_role = caller.tenant_id, caller.key_id, caller.role
    _rate_limit(caller.tenant_id)


FORBIDDEN_DOC = "forbidden: this endpoint needs an operator key (`agentruns keys create --role operator`)."


def require_operator() -> None:
    """Answer 403 `forbidden` unless the request's key is an operator key (authenticating it first when
    no guard did); for a view that is only partly the operator's."""
    if getattr(g, "key_role", None) is None:
        authenticate_request()
    if g.key_role != OPERATOR_ROLE:
        raise APIError(403, "forbidden", "this endpoint needs an operator key")


def operator_required(view):
    """Decorator: the view answers operator keys only; any other key gets 403 `forbidden` (the one error
    format), a missing or refused key 401. It also documents the 403 in the OpenAPI spec.

    Put it right under @blp.route, so that the role is checked before any arguments are parsed:

        @blp.route("/admin/stats", methods=["GET"])
        @operator_required
        @blp.response(200, StatsEnvelope)
        def stats(): ...

    Register the blueprint with guard_api like the others (it authenticates before validation); in a
    blueprint that is not guarded, the decorator authenticates the key itself.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        require_operator()
        return view(*args, **kwargs)

    return Blueprint.errors({403: FORBIDDEN_DOC})(wrapper)


def guard_api(blueprints: tuple[str, ...], sharing: tuple[str, ...] = ()):
    """A before_request hook for these blueprints: content type, then the API key, before any validation.

    sharing: the blueprints whose views run on the request's connection (app.request_db), which keep
    the one the key check took; the others' views take their own, so it goes back to the pool at once
    (a device's connection test would otherwise hold it, idle, for seconds).
    """

    def guard():
        if request.blueprint not in blueprints:
            return
        if request.method in ("POST", "PATCH", "PUT") and (request.content_length or request.mimetype):
            if request.mimetype != "application/json":
                raise APIError(415, "unsupported_media_type", "send the body as application/json")
        authenticate_request()
        if request.blueprint not in sharing:
            request_db.release()

    return guard
