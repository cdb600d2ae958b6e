"""gunicorn's logger class for `agentruns api --log-format json`: gunicorn's own lines (error log, and
the access log when enabled) and every other logger's (the app's agentruns.* ones) as JSON lines.

Loaded by the gunicorn master (`--logger-class app.gunicorn_json.JsonLogger`) before it forks the
workers, which inherit the handlers; imports nothing but gunicorn and the standard library.
"""
from __future__ import annotations

import logging

from gunicorn.glogging import Logger

from core import log_context


class JsonLogger(Logger):
    """gunicorn's Logger with JSON formatters, plus a JSON root handler for the application's loggers."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            log_context.make_json(handler)
        # WARNING for libraries, as without a root handler; create_app lets agentruns.* through at INFO.
        log_context.configure_json(logging.WARNING)
