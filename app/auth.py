"""Bearer API keys -> tenant, the content-type check, and an optional per-tenant rate limit."""
from __future__ import annotations

import time

from flask import current_app, g, request

from app.api.errors import APIError
from core import db
from core.services.keys import authenticate


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
    """Resolve the Bearer key to g.tenant_id or answer 401 (before any validation)."""
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise APIError(401, "unauthorized", "missing API key: send `Authorization: Bearer <key>`",
                       headers={"WWW-Authenticate": "Bearer"})
    # A bare connection, not an ORM session: this runs on every API request.
    with db.engine().connect() as conn:
        tenant_id = authenticate(conn, raw.strip())
    if tenant_id is None:
        raise APIError(401, "unauthorized", "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    g.tenant_id = tenant_id
    _rate_limit(tenant_id)


def guard_api(blueprints: tuple[str, ...]):
    """A before_request hook for these blueprints: content type, then the API key, before any validation."""

    def guard():
        if request.blueprint not in blueprints:
            return
        if request.method in ("POST", "PATCH", "PUT") and (request.content_length or request.mimetype):
            if request.mimetype != "application/json":
                raise APIError(415, "unsupported_media_type", "send the body as application/json")
        authenticate_request()

    return guard
