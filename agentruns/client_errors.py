"""Typed exceptions of the agentruns SDK, built from the API's one error body."""
from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class AgentrunsError(Exception):
    """Base of every SDK error: `code`, `message`, `status` (None without a response), `request_id`, `details`."""

    def __init__(self, message: str, *, code: str = "error", status: int | None = None,
                 request_id: str | None = None, details: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status
        self.request_id, self.details = request_id, details or {}
        self.headers = headers or {}

    def __str__(self) -> str:
        extra = [f"code={self.code}"]
        if self.status is not None:
            extra.append(f"status={self.status}")
        if self.request_id:
            extra.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(extra)})"


class BadRequest(AgentrunsError):
    """400, 405, 413, 415: the request itself is malformed."""


class Unauthorized(AgentrunsError):
    """401: missing, bad or revoked API key."""


class PermissionDenied(AgentrunsError):
    """403."""


class NotFound(AgentrunsError):
    """404: no such object in the caller's tenant."""


class Conflict(AgentrunsError):
    """409: e.g. cancelling a finished run, deleting a busy device, an Idempotency-Key in use."""


class ValidationFailed(AgentrunsError):
    """422: field errors are in `details["fields"]`; also `idempotency_key_reused`."""

    @property
    def fields(self) -> dict[str, list[str]]:
        """Per-field messages, e.g. {"prompt": ["required"]}."""
        return self.details.get("fields", {})


class RateLimited(AgentrunsError):
    """429: `retry_after` seconds (if the server said) before trying again."""

    @property
    def retry_after(self) -> float | None:
        """The Retry-After header in seconds, or None."""
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(AgentrunsError):
    """5xx: the server (or a proxy in front of it) failed."""


class ConnectionFailed(AgentrunsError):
    """No usable HTTP response: connection refused or dropped, timeout, protocol error."""


class WaitTimeout(AgentrunsError):
    """The run was not finished when the caller's wait limit passed; `run` is its last known state."""

    def __init__(self, run: dict, seconds: float):
        super().__init__(f"run {run.get('id')} still {run.get('status')} after {seconds:g}s", code="wait_timeout")
        self.run = run


_BY_STATUS: dict[int, type[AgentrunsError]] = {
    400: BadRequest, 401: Unauthorized, 403: PermissionDenied, 404: NotFound, 405: BadRequest, 409: Conflict,
    413: BadRequest, 415: BadRequest, 422: ValidationFailed, 429: RateLimited,
}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(resp: httpx.Response) -> AgentrunsError:
    """The typed error for a >= 400 response; copes with bodies that are not ours (a proxy's HTML page)."""
    body: Any = None
    try:
        body = resp.json()
    except ValueError:
        pass
    err = body.get("error") if isinstance(body, dict) else None
    request_id = (body.get("request_id") if isinstance(body, dict) else None) or resp.headers.get("x-request-id")
    if isinstance(err, dict):
        code, message, details = err.get("code") or "error", err.get("message") or "", err.get("details") or {}
    else:
        snippet = resp.text.strip().replace("\n", " ")[:200] if resp.content else ""
        code, message, details = f"http_{resp.status_code}", f"HTTP {resp.status_code} {resp.reason_phrase}", {}
        if snippet:
            message += f": {snippet}"
    cls = _BY_STATUS.get(resp.status_code) or (ServerError if resp.status_code >= 500 else AgentrunsError)
    return cls(message, code=code, status=resp.status_code, request_id=request_id, details=details,
               headers={k.lower(): v for k, v in resp.headers.items()})


def connection_error(exc: Exception, request_id: str | None = None) -> ConnectionFailed:
    """Wrap an httpx transport error, naming the URL when there is one."""
    url = None
    try:
        url = str(exc.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        pass
    what = type(exc).__name__
    message = f"{what}: {exc}" if str(exc) else what
    if url:
        message += f" ({url})"
    return ConnectionFailed(message, code="connection_failed", request_id=request_id)
