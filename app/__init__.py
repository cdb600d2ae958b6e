"""The thin Flask API over the domain core. `create_app()` wires configuration, the database, Redis,
Celery and the blueprints; importing this package imports none of them."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from core.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the WSGI app; nothing connects until a request needs it."""
    import logging
    import os

    import redis
    from flask import Flask
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from app import console, gevent_wait, health, request_db, request_logs
    from app.api import admin, devices, errors, keys, runs, webhooks
    from app.api.parser import limit_unsized_body
    from app.auth import guard_api
    from app.enqueue import Publisher
    from core import db, log_context
    from core.config import Settings
    from core.messages import fail_fast, make_celery

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="agentruns", API_VERSION="v1", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1", OPENAPI_JSON_PATH="openapi.json",
        # Swagger UI from the vendored copy (app/static/vendor/swagger-ui): the docs work offline.
        OPENAPI_SWAGGER_UI_PATH="docs", OPENAPI_SWAGGER_UI_URL=console.SWAGGER_UI_URL,
        OPENAPI_SWAGGER_UI_CONFIG=console.SWAGGER_UI_CONFIG,
    )
    db.init(settings.database_url)
    gevent_wait.install()  # under gunicorn's gevent workers: a cheaper wait for psycopg's results
    app.extensions["settings"] = settings
    # No client-side retries: when Redis is down, idempotency falls back to the database at once
    # instead of after redis-py's backoff.
    app.extensions["redis"] = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=5,
                                                    retry=Retry(NoBackoff(), 0))
    app.extensions["celery"] = fail_fast(make_celery(settings))
    app.extensions["publisher"] = Publisher(app.extensions["celery"], app.extensions["redis"])
    api = errors.AgentrunsApi(app, spec_kwargs={"components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"}}}, "security": [{"bearer": []}]})
    app.extensions["agentruns_api"] = api
    errors.register(app)
    request_logs.init_app(app)  # before the other hooks: their log lines carry the request_id too
    for blp in (runs.blp, devices.blp, webhooks.blp, keys.blp, admin.blp):
        api.register_blueprint(blp)
    app.before_request(limit_unsized_body)  # first: the checks below may read the body
    app.before_request(guard_api((runs.blp.name, devices.blp.name, webhooks.blp.name, keys.blp.name,
                                   admin.blp.name), sharing=(runs.blp.name,)))
    app.before_request(request_logs.bind_tenant)  # after the key check: its g.tenant_id
    app.teardown_request(request_db.release)  # the connection the key check or the view checked out
    console.init_app(app)  # the web console: /, /runs, /devices, /sign-in
    app.register_blueprint(health.blp)
    logging.getLogger("agentruns").setLevel(logging.INFO)
    if os.environ.get(log_context.ENV, "").lower() == "json":  # `agentruns api --log-format json`, or gunicorn
        log_context.configure_json(logging.WARNING)  # (`agentruns api` set this up in gunicorn already)
    return app
