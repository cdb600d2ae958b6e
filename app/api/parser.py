"""How request bodies are read: the Blueprint our resources use (flask-smorest's, with a webargs
parser that turns every body Python's json cannot load into webargs' 400, our `invalid_json`, not
only syntax errors), and the size limit for bodies sent without a Content-Length."""
from __future__ import annotations

import io
import json

import flask_smorest
from flask import current_app, request
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge


class Parser(FlaskParser):
    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise  # webargs' own handling: an empty body is "no body", the rest a 400
        except (ValueError, RecursionError) as exc:
            # Valid JSON Python will not load: an integer of more than 4300 digits (ValueError), or
            # nesting deeper than the recursion limit. Neither is a server error.
            self._handle_invalid_json_error(exc, req)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()


def limit_unsized_body() -> None:
    """before_request: a chunked body over MAX_CONTENT_LENGTH is a 413.

    Werkzeug enforces the limit on a body without a Content-Length by silently stopping at it, so an
    oversized body reached the JSON parser cut short and answered 400. Read it here, one byte past the
    limit, and hand the view the whole body with its length.
    """
    env = request.environ
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or not env.get("wsgi.input_terminated") or limit is None:
        return
    body = env["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    env["wsgi.input"], env["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
    env.pop("HTTP_TRANSFER_ENCODING", None)
    request.__dict__.pop("stream", None)  # a cached stream would still be the unsized one
