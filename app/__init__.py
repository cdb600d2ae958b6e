"""The thin Flask API. `create_app()` wires configuration, the database, Redis, Celery and the blueprints."""
from __future__ import annotations

import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from flask import Flask, request
from sqlalchemy import text

from app import db, web
from app.api import devices, errors, runs
from app.api.errors import APIError
from app.auth import authenticate_request
from app.config import Settings
from app.enqueue import fail_fast


def create_app(settings: Settings | None = None) -> Flask:
    """Build the WSGI app; nothing connects until a request needs it."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="agentruns", API_VERSION="v1", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1", OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs", OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
    )
    db.init(settings.database_url)
    from workers.celery_app import make_celery

    app.extensions["settings"] = settings
    # No client-side retries: when Redis is down, idempotency falls back to the database at once
    # instead of after redis-py's backoff.
    app.extensions["redis"] = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=5,
                                                    retry=Retry(NoBackoff(), 0))
    app.extensions["celery"] = fail_fast(make_celery(settings))
    api = errors.AgentrunsApi(app, spec_kwargs={"components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"}}}, "security": [{"bearer": []}]})
    app.extensions["agentruns_api"] = api
    errors.register(app)
    for blp in (runs.blp, devices.blp):
        api.register_blueprint(blp)
    app.before_request(_guard_api)
    app.register_blueprint(web.blp)
    _health(app)
    logging.getLogger("agentruns").setLevel(logging.INFO)
    return app


def _guard_api():
    """Content type, then the API key, before any validation of an /api/v1 resource request."""
    if request.blueprint not in (runs.blp.name, devices.blp.name):
        return
    if request.method in ("POST", "PATCH", "PUT") and (request.content_length or request.mimetype):
        if request.mimetype != "application/json":
            raise APIError(415, "unsupported_media_type", "send the body as application/json")
    authenticate_request()


def _health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        checks = {}
        try:
            with db.engine().connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            app.extensions["redis"].ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
