"""The console's session: a signed cookie that holds the API key's id (never the key) and a nonce.

The cookie is signed (itsdangerous, Flask's own dependency) with a key derived from
AGENTRUNS_SECRET_KEY, so rotating that secret ends every session. Every request reads the key's row
again, so a revoked key ends its sessions at once. Signing out records the nonce in Redis until the
cookie would have expired, so a copy of a signed-out cookie is refused as well. The nonce also binds
the CSRF tokens (app.console.csrf) and is replaced at sign-in, so a nonce planted before sign-in is
worth nothing after it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field

import redis
from flask import Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import bindparam, select

from core import db
from core.models import ApiKey, Tenant
from core.services.keys import KEY_PREFIX, live_condition

log = logging.getLogger("agentruns.console")

COOKIE = "agentruns_console"
MAX_AGE_SECONDS = 12 * 3600  # idle limit: a cookie in use is re-signed, see REFRESH_SECONDS
REFRESH_SECONDS = 600
_SIGNED_OUT = "agentruns:console:signed-out:"


class ConsoleDisabled(Exception):
    """AGENTRUNS_SECRET_KEY is unset: a key derived from nothing would let anyone forge a session."""


def derived_key(purpose: str) -> bytes:
    """A key for one purpose (session, csrf) derived from the service's secret key."""
    secret = current_app.extensions["settings"].secret_key
    if not secret:
        raise ConsoleDisabled()
    return hmac.new(secret.encode(), f"agentruns console {purpose} v1".encode(), hashlib.sha256).digest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(derived_key("session"), salt="agentruns.console.session")


@dataclass
class ConsoleSession:
    """What the cookie carries. `dirty` asks the response to write it again."""

    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    key_id: str | None = None
    notice: list[str] | None = None  # [kind, message], shown once on the next page
    issued_at: float = field(default_factory=time.time)
    dirty: bool = True

    def flash(self, kind: str, message: str) -> None:
        """Show this message on the next page rendered."""
        self.notice, self.dirty = [kind, message], True

    def pop_notice(self) -> list[str] | None:
        """The pending message, once."""
        notice, self.notice = self.notice, None
        if notice:
            self.dirty = True
        return notice


@dataclass(frozen=True)
class Viewer:
    """The signed-in caller: their key and tenant, checked against the database on this request."""

    key_id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_name: str


def load() -> ConsoleSession:
    """The session the request's cookie holds, or a new anonymous one."""
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data, signed_at = _serializer().loads(raw, max_age=MAX_AGE_SECONDS, return_timestamp=True)
            issued = signed_at.timestamp()
            return ConsoleSession(nonce=str(data["n"]), key_id=data.get("k"), notice=data.get("f"),
                                  issued_at=issued, dirty=time.time() - issued > REFRESH_SECONDS)
        except (BadSignature, KeyError, TypeError):
            pass  # expired, forged or from another secret: start over
    return ConsoleSession()


def save(session: ConsoleSession, response: Response) -> None:
    """Write the cookie when it changed or is due for re-signing."""
    if not session.dirty:
        return
    value = _serializer().dumps({"n": session.nonce, "k": session.key_id, "f": session.notice})
    response.set_cookie(COOKIE, value, max_age=MAX_AGE_SECONDS, httponly=True, samesite="Lax",
                        secure=request.is_secure, path="/")


# The key's id and tenant by its hash, and the tenant of a live key id. core.services.keys has no
# lookup that returns the key's id; these two may move there.
_KEY_BY_HASH = select(ApiKey.id).where(ApiKey.key_hash == bindparam("key_hash"), live_condition())
_LIVE_KEY = (select(ApiKey.tenant_id, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
             .where(ApiKey.id == bindparam("key_id"), live_condition()))


def key_id_for(raw_key: str) -> uuid.UUID | None:
    """The id of a live (not revoked, not expired) API key, or None (as core.services.keys.authenticate)."""
    raw_key = raw_key.strip()
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    with db.engine().connect() as conn:
        return conn.execute(_KEY_BY_HASH, {"key_hash": hashlib.sha256(raw_key.encode()).hexdigest()}).scalar()


def viewer(session: ConsoleSession) -> Viewer | None:
    """The session's caller if its key is still live and the session was not signed out."""
    if not session.key_id or _signed_out(session.nonce):
        return None
    try:
        key_id = uuid.UUID(session.key_id)
    except ValueError:
        return None
    with db.engine().connect() as conn:
        row = conn.execute(_LIVE_KEY, {"key_id": key_id}).first()
    return Viewer(key_id, row.tenant_id, row.name) if row is not None else None


def sign_in(session: ConsoleSession, key_id: uuid.UUID) -> None:
    """Bind the session to a key, under a fresh nonce (no fixation of a nonce seen before)."""
    session.nonce, session.key_id, session.dirty = secrets.token_urlsafe(18), str(key_id), True


def sign_out(session: ConsoleSession) -> None:
    """Refuse this session's cookie from now on, also a copy of it, and start an anonymous one."""
    ttl = max(1, int(session.issued_at + MAX_AGE_SECONDS - time.time()))
    try:
        current_app.extensions["redis"].set(_SIGNED_OUT + session.nonce, "1", ex=ttl)
    except redis.RedisError as exc:  # the browser's cookie is still removed below
        log.warning("could not record a console sign-out: %s", exc)
    session.nonce, session.key_id, session.dirty = secrets.token_urlsafe(18), None, True


def _signed_out(nonce: str) -> bool:
    # Fails open: with Redis down only a copied cookie of a signed-out session would still work
    # (until it expires or its key is revoked), while failing closed would sign everyone out.
    try:
        return bool(current_app.extensions["redis"].exists(_SIGNED_OUT + nonce))
    except redis.RedisError as exc:
        log.warning("could not check console sign-outs: %s", exc)
        return False


def current() -> ConsoleSession:
    """This request's session (loaded by the console's before_request hook)."""
    return g.console_session
