"""How request bodies are read: the Blueprint our resources use (flask-smorest's, with a webargs
parser that turns every body Python's json cannot load into webargs' 400, our `invalid_json`, not
only syntax errors, and with the OpenAPI documentation of what the app does around each view), and
the size limit for bodies sent without a Content-Length."""
from __future__ import annotations

import io
import json
from collections.abc import Mapping
from copy import deepcopy

import flask_smorest
from flask import current_app, request
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from app.api.errors import REQUEST_ID, VALIDATION_ERROR, error_doc, shared_errors


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


def _add_doc(key: str, value):
    """A decorator storing documentation for Blueprint._document_contract beside flask-smorest's own
    (in the view's `_apidoc`, which flask-smorest's decorators copy onto their wrappers)."""

    def decorator(func):
        apidoc = deepcopy(getattr(func, "_apidoc", {}))
        given = apidoc.get(key)  # from another such decorator on the same view: keep both
        apidoc[key] = {**given, **value} if isinstance(given, dict) else [*value, *given] if given else value
        func._apidoc = apidoc
        return func

    return decorator


def _status_order(status) -> tuple[bool, str]:
    return status == "default", str(status)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._document_contract)

    @staticmethod
    def errors(described: dict[int, str], *, retry_after: tuple[int, ...] = ()):
        """Document the errors the view itself answers ({status: "code: when"}); `retry_after`: the
        statuses that may carry Retry-After. The shared ones (401, 429, 503, ...) are added anyway."""
        docs = {status: error_doc(text, retry_after=False if status in retry_after else None)
                for status, text in described.items()}
        return _add_doc("agentruns_errors", docs)

    @staticmethod
    def doc_parameters(*parameters: dict):
        """Document parameters the view reads itself (request headers, the metadata[KEY] filter):
        documentation only, webargs parses none of them."""
        return _add_doc("agentruns_parameters", list(parameters))

    @staticmethod
    def _document_contract(doc, doc_info, *, method, **kwargs):
        """What every operation of the API does besides its own answer: the optional X-Request-Id
        request header, echoed on every response, and the shared errors (errors.shared_errors). An
        @arguments view's 422 becomes our validation error, unless the view describes its own."""
        doc["parameters"] = [*doc.get("parameters", []), *doc_info.get("agentruns_parameters", []), REQUEST_ID]
        responses = doc.setdefault("responses", {})
        if 422 in responses:
            responses[422] = error_doc(VALIDATION_ERROR)
        responses.update(shared_errors(method, "requestBody" in doc))
        responses.update(deepcopy(doc_info.get("agentruns_errors", {})))
        for response in responses.values():
            if isinstance(response, Mapping):  # a shared (named) response documents its own headers
                response.setdefault("headers", {})[REQUEST_ID] = REQUEST_ID
        doc["responses"] = dict(sorted(responses.items(), key=lambda item: _status_order(item[0])))
        return doc


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
