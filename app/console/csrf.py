"""CSRF tokens: an HMAC of the session's nonce under a key derived from the service's secret.

A cross-site form can send the victim's cookie but cannot read the token from a console page, and a
token is worth nothing in another session (the nonce differs, and is replaced at sign-in). The
SameSite=Lax cookie is the second line: a cross-site POST does not carry it at all.
"""
from __future__ import annotations

import hmac
from hashlib import sha256

from flask import request

from app.console.session import ConsoleSession, derived_key

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


class CsrfRefused(Exception):
    """A state-changing request came without this session's token."""


def token(session: ConsoleSession) -> str:
    """The token forms of this session carry."""
    return hmac.new(derived_key("csrf"), session.nonce.encode(), sha256).hexdigest()


def require(session: ConsoleSession) -> None:
    """Raise CsrfRefused unless the request carries this session's token (form field or header)."""
    given = request.form.get(FIELD) or request.headers.get(HEADER) or ""
    if not hmac.compare_digest(given.encode(), token(session).encode()):
        raise CsrfRefused()
