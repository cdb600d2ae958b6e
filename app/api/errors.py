"""The one error body: {"error": {"code", "message", "details"}, "request_id"} plus X-Request-Id."""
from __future__ import annotations

import logging
import re
import uuid

import marshmallow as ma
import redis
from flask import g, jsonify, request
from flask_smorest import Api
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from core import db
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, QuotaExceeded

log = logging.getLogger("agentruns.api")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
          500: "internal_error", 503: "unavailable"}
UNAVAILABLE_RETRY_AFTER = 2  # seconds: a restart of PostgreSQL or Redis takes about that
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_FRIENDLY = {"Missing data for required field.": "required", "Unknown field.": "unknown field",
             "Field may not be null.": "may not be null"}


# Each domain error class answers with one status; the code and message are the error's own.
_DOMAIN_STATUS: dict[type[DomainError], int] = {NotFound: 404, Conflict: 409, Invalid: 422, Forbidden: 403,
                                                 QuotaExceeded: 429}


def domain_status(err: DomainError) -> int:
    """The HTTP status of a domain error (500 for a class not mapped: a bug)."""
    return next((code for cls, code in _DOMAIN_STATUS.items() if isinstance(err, cls)), 500)


class APIError(Exception):
    """Raise from the web layer (auth, content type, rate limit) to answer with the one error format;
    services raise core.errors instead."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.headers = headers or {}


def request_id() -> str:
    rid = getattr(g, "request_id", None)
    if rid is None:
        given = request.headers.get("X-Request-Id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.request_id = rid
    return rid


def error_response(status: int, code: str, message: str, details: dict | None = None, headers=None):
    body = {"error": {"code": code, "message": message, "details": details or {}}, "request_id": request_id()}
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _flatten(messages, prefix="") -> dict[str, list[str]]:
    """webargs nests errors by location and field; callers want `field.sub: [messages]`."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, val in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(val, name))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "_schema"] = [_FRIENDLY.get(m) or m for m in messages]
    elif isinstance(messages, list):  # a validator that raised a dict: marshmallow wraps it in a list
        for val in messages:
            out.update(_flatten(val, prefix))
    else:
        out[prefix or "_schema"] = [_FRIENDLY.get(str(messages), str(messages))]
    return out


def validation_error(fields: dict[str, list[str]]):
    summary = "; ".join(f"{name}: {', '.join(msgs)}" for name, msgs in sorted(fields.items()))
    return error_response(422, "validation_error", summary or "invalid request", {"fields": fields})


class ErrorDetail(ma.Schema):
    code = ma.fields.String(required=True, metadata={"description": "machine-readable, e.g. validation_error"})
    message = ma.fields.String(required=True)
    details = ma.fields.Dict(required=True, metadata={"description": 'validation errors: {"fields": {name: [...]}}'})


class ErrorBody(ma.Schema):
    """What every error answers (documentation only: error_response builds it)."""

    error = ma.fields.Nested(ErrorDetail, required=True)
    request_id = ma.fields.String(required=True)


def _unavailable(err: Exception) -> str | None:
    """Which dependency an exception says is down ("the database", "Redis"), or None."""
    if db.unreachable(err) or isinstance(err, sa_exc.TimeoutError):  # TimeoutError: the pool is exhausted
        return "the database"
    if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
        return "Redis"
    return None


# --- The OpenAPI document: what every answer carries, and the errors every operation can give ----------
# Component names. The views document their own errors (404, 409, 422 causes) with Blueprint.errors
# (app/api/parser.py), which adds these shared ones by the rules in `shared_errors`.
REQUEST_ID = "X-Request-Id"
RETRY_AFTER = "Retry-After"
UNEXPECTED = "UnexpectedError"

_HEADERS: dict[str, dict] = {
    REQUEST_ID: {
        "description": "The request's id, also the error body's request_id: the caller's X-Request-Id when it "
                       "is 1 to 128 characters of [A-Za-z0-9._:-], else one the server made up.",
        "required": True, "schema": {"type": "string", "pattern": _REQUEST_ID.pattern}},
    RETRY_AFTER: {
        "description": "Seconds to wait before retrying.",
        "required": True, "schema": {"type": "integer", "minimum": 0}},
}

# Sent with any request, echoed in the X-Request-Id response header.
REQUEST_ID_PARAMETER = {
    "required": False, "schema": {"type": "string"},
    "description": "Your id for this request (1 to 128 characters of [A-Za-z0-9._:-]), echoed in the "
                   "X-Request-Id response header and stored as a created run's request_id; any other "
                   "value is replaced by one the server makes up (never refused).",
}


def error_doc(description: str, *, retry_after: bool | None = None, headers: dict | None = None) -> dict:
    """An OpenAPI response of the one error body (ErrorBody) with its X-Request-Id.

    retry_after: True when the answer always carries Retry-After, False when it may (only some codes).
    """
    all_headers: dict = {REQUEST_ID: REQUEST_ID}
    if retry_after is not None:
        all_headers[RETRY_AFTER] = (RETRY_AFTER if retry_after else
                                    {**_HEADERS[RETRY_AFTER], "required": False,
                                     "description": "Seconds to wait before retrying, with the codes that say so."})
    all_headers.update(headers or {})
    return {"description": description, "headers": all_headers,
            "content": {"application/json": {"schema": ErrorBody}}}


# Errors the app answers before or around any view (guard_api, limit_unsized_body, the error handlers).
_SHARED_ERRORS: dict[int | str, tuple[str, dict]] = {
    400: ("InvalidJson", error_doc("invalid_json: the body is not JSON this server can read.")),
    401: ("Unauthorized", error_doc(
        "unauthorized: no `Authorization: Bearer <key>` header, or an invalid, revoked or expired key.",
        headers={"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}})),
    413: ("PayloadTooLarge", error_doc(
        "payload_too_large: the body is larger than the server's limit (AGENTRUNS_MAX_BODY_BYTES).")),
    415: ("UnsupportedMediaType", error_doc(
        "unsupported_media_type: a body sent as anything but application/json.")),
    429: ("RateLimited", error_doc(
        "rate_limited: more requests this minute than the tenant's limit (AGENTRUNS_RATE_LIMIT_PER_MINUTE); "
        "quota_exceeded: creating a run or a device beyond the tenant's quota (AGENTRUNS_QUOTA_*).",
        retry_after=True)),
    503: ("Unavailable", error_doc(
        "unavailable: the database or Redis cannot be reached; retry after Retry-After seconds.",
        retry_after=True)),
    "default": (UNEXPECTED, error_doc("internal_error: an unexpected error (500).")),
}
VALIDATION_ERROR = ("validation_error: the parameters or the body failed validation; "
                    "error.details.fields maps each field to its problems.")


def shared_errors(method: str, has_body: bool) -> dict[int | str, str]:
    """The shared error responses (component names) of an operation of the API's blueprints."""
    statuses: list[int | str] = [401, 429, 503, "default"]  # the key check, the rate limit, an outage, a bug
    if method in ("post", "patch", "put"):
        statuses += [413, 415]  # guard_api's content-type check and the body size limit
    if has_body:
        statuses.append(400)  # the JSON body does not parse
    return {status: _SHARED_ERRORS[status][0] for status in statuses}


class AgentrunsApi(Api):
    """flask-smorest's Api with our error body in place of its own, in the spec as in the answers."""

    ERROR_SCHEMA = ErrorBody
    DEFAULT_ERROR_RESPONSE_NAME = UNEXPECTED

    def _register_responses(self):
        """Our shared headers and error responses beside flask-smorest's (all lazy: in the document
        only when an operation refers to them)."""
        super()._register_responses()
        for name, header in _HEADERS.items():
            self.spec.components.header(name, header, lazy=True)
        self.spec.components.parameter(REQUEST_ID, "header", REQUEST_ID_PARAMETER, lazy=True)
        for name, response in _SHARED_ERRORS.values():
            self.spec.components.response(name, response, lazy=True)

    def _register_pagination_header(self):
        """No pagination header: lists page by cursor (next_cursor), so no PaginationMetadata schema."""

    def handle_http_exception(self, error: HTTPException):
        data = getattr(error, "data", None) or {}
        if error.code == 422 and "messages" in data:
            messages = data["messages"]
            # Drop the webargs location level ("json", "query") when there is only one.
            if isinstance(messages, dict) and len(messages) == 1:
                messages = next(iter(messages.values()))
            return validation_error(_flatten(messages))
        if error.code == 400 and "messages" in data:
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        code = _CODES.get(error.code or 500, "error")
        message = data.get("message") or error.description or error.name
        if (error.code or 500) >= 500:
            message = "internal error"
        # The exception's own headers, but for its HTML Content-Type: a 405 must name the allowed
        # methods in Allow (RFC 9110).
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return error_response(error.code or 500, code, message, headers={**headers, **(data.get("headers") or {})})


def register(app) -> None:
    """Attach the request-id hooks and the handlers for our own and unexpected exceptions."""

    @app.before_request
    def _assign_request_id():
        request_id()

    @app.after_request
    def _echo_request_id(resp):
        resp.headers["X-Request-Id"] = request_id()
        return resp

    @app.errorhandler(APIError)
    def _api_error(err: APIError):
        return error_response(err.status, err.code, err.message, err.details, err.headers)

    @app.errorhandler(DomainError)
    def _domain_error(err: DomainError):
        status = domain_status(err)
        if status == 500:
            return _unexpected(err)
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
        return error_response(status, err.code, err.message, err.details, headers)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        if isinstance(err, HTTPException):
            return app.extensions["agentruns_api"].handle_http_exception(err)
        down = _unavailable(err)
        if down is not None:  # not a bug: the caller may retry once the dependency is back
            log.warning("%s is unavailable (%s) request_id=%s", down, type(err).__name__, request_id())
            return error_response(503, "unavailable", f"{down} is unavailable; retry shortly",
                                  headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
        log.exception("unhandled error request_id=%s", request_id())
        return error_response(500, "internal_error", "internal error")
