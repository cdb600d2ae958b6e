"""Log fields of an API request: its request_id from the start, its tenant_id once the key is known,
and one line per run it created (so a search for a run id finds where and by whom it was made)."""
from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from app.api.errors import request_id
from core import log_context

log = logging.getLogger("agentruns.api")
_CREATE_RUN = ("POST", "/api/v1/agent-runs")


def init_app(app: Flask) -> None:
    """Bind request_id for the whole request (register before the other hooks: their lines get it too),
    log created runs, and unbind at teardown. Register `bind_tenant` after the key check."""
    app.before_request(_bind_request)
    app.after_request(_log_created_run)
    app.teardown_request(_unbind)


def _bind_request() -> None:
    g.log_token = log_context.push(request_id=request_id())


def bind_tenant() -> None:
    """before_request, after guard_api: the rest of the request's lines carry its tenant_id."""
    tenant_id = getattr(g, "tenant_id", None)
    if tenant_id is not None:
        log_context.push(tenant_id=tenant_id)  # undone with the request's binding at teardown


def _log_created_run(resp: Response) -> Response:
    created = g.get("created_run")  # (run id, device id), set by the create view
    if created is not None and resp.status_code == 201:
        rule = request.url_rule
        if rule is not None and (request.method, rule.rule) == _CREATE_RUN:
            run_id, device_id = created
            log.info("run %s created", run_id, extra={"run_id": run_id, "device_id": device_id})
    return resp


def _unbind(_exc: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        try:
            log_context.reset(token)
        except ValueError:  # reset in another context than the push (never in Flask's own dispatch)
            pass
