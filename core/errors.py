"""Domain errors. Services raise these; the web layer maps each class to one HTTP status
(app/api/errors.py), the CLI to a message. `code` is the machine-readable error code callers see."""
from __future__ import annotations


class DomainError(Exception):
    """Base: a code, a human message, details (e.g. {"fields": {...}}), and seconds to wait before retrying."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: dict | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details or {}
        self.retry_after = retry_after


class NotFound(DomainError):
    """No such object for this tenant (another tenant's objects are not found either)."""

    code = "not_found"


class Conflict(DomainError):
    """The object's current state forbids the request (a finished run, a busy device, a key in use)."""

    code = "conflict"


class Forbidden(DomainError):
    """The caller's key may not do this (a tenant key managing an operator key, creating an operator key)."""

    code = "forbidden"


class QuotaExceeded(DomainError):
    """The tenant is at a quota (core.quotas); retry_after says when to try again."""

    code = "quota_exceeded"


class Invalid(DomainError):
    """The request is well-formed but not acceptable; details carry per-field messages."""

    code = "validation_error"

    @classmethod
    def field(cls, name: str, message: str, code: str | None = None) -> Invalid:
        """One field's problem, in the API's `{"fields": {name: [message]}}` shape."""
        return cls(f"{name}: {message}", code=code, details={"fields": {name: [message]}})
