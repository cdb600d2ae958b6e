"""Tenants and API keys. A key is shown once; only its SHA-256 and a short visible prefix are stored.

A key has a role (agentruns.vocabulary.KEY_ROLES): a `tenant` key uses the API for its tenant; an
`operator` key can do that too and also reaches the operator's endpoints. A key may expire. Every API
request looks its key up in PostgreSQL (no cache), so a revoked or expired key is refused on the very
next request on every API process.

Who may manage which key (the API's rules; the operator's CLI reaches the database and may do anything):
a caller manages only its own tenant's keys; a tenant key creates only tenant keys and cannot revoke or
rotate an operator key (rotating one would hand it an operator key); operator keys are created only by
`agentruns keys create --role operator`. A key may revoke or rotate itself: the holder of a leaked key
can kill it with that key.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from agentruns.vocabulary import KEY_ROLES, OPERATOR_ROLE, TENANT_ROLE
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.models import ApiKey, Tenant
from core.runstate import utcnow

KEY_PREFIX = "ark_live_"
MAX_EXPIRY_DAYS = 3650  # as expires_in_days; a later time does not fit Python's datetime for every offset
# last_used_at is written at most this often per key: knowing a key was used this minute is enough,
# and a write per request would double the cost of authentication.
TOUCH_INTERVAL = timedelta(seconds=60)


class KeyRefused(Exception):
    """authenticate: the key is unknown, revoked or expired; the message says which."""


@dataclass(frozen=True)
class Caller:
    """Who a request's key is: the key's id, its tenant and its role."""

    key_id: uuid.UUID
    tenant_id: uuid.UUID
    role: str

    @property
    def is_operator(self) -> bool:
        """Whether the key may use the operator's endpoints."""
        return self.role == OPERATOR_ROLE


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def live_condition():
    """SQL: the key is neither revoked nor expired (for lookups elsewhere, e.g. the console's session)."""
    return (ApiKey.revoked_at.is_(None)) & or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now())


def get_or_create_tenant(s: Session, name: str) -> Tenant:
    tenant = s.execute(select(Tenant).where(Tenant.name == name)).scalar_one_or_none()
    if tenant is None:
        tenant = Tenant(name=name)
        s.add(tenant)
        s.flush()
    return tenant


def issue(s: Session, tenant_id: uuid.UUID, *, name: str | None = None, role: str = TENANT_ROLE,
          expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key of this tenant; returns (its row, the full key, which is shown only now)."""
    if role not in KEY_ROLES:
        raise Invalid.field("role", f"must be one of {', '.join(KEY_ROLES)}")
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid.field("expires_at", "must be in the future")
    if expires_at is not None and expires_at > utcnow() + timedelta(days=MAX_EXPIRY_DAYS):
        raise Invalid.field("expires_at", f"must be within {MAX_EXPIRY_DAYS} days")
    raw = KEY_PREFIX + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
    key = ApiKey(tenant_id=tenant_id, prefix=raw[: len(KEY_PREFIX) + 8], key_hash=_hash(raw), name=name, role=role,
                 expires_at=expires_at)
    s.add(key)
    s.flush()
    s.refresh(key)  # created_at, from the database
    return key, raw


def create_key(s: Session, tenant_name: str, *, name: str | None = None, role: str = TENANT_ROLE,
               expires_at: datetime | None = None) -> tuple[Tenant, str, str]:
    """Create (tenant if needed and) a key; returns (tenant, full key, visible prefix)."""
    tenant = get_or_create_tenant(s, tenant_name)
    key, raw = issue(s, tenant.id, name=name, role=role, expires_at=expires_at)
    return tenant, raw, key.prefix


def revoke_key(s: Session, prefix: str) -> bool:
    """Revoke by visible prefix, whatever its tenant (the operator's CLI); False when no live key has it."""
    rows = s.execute(update(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
                     .values(revoked_at=utcnow()).returning(ApiKey.id)).all()
    return bool(rows)


def list_keys(s: Session, tenant_id: uuid.UUID | None = None) -> list[tuple[ApiKey, str]]:
    """(key, tenant name) pairs, newest first: the tenant's, or with None every tenant's."""
    stmt = (select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc()))
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    return [(key, name) for key, name in s.execute(stmt).all()]


def get(s: Session, prefix: str, *, tenant_id: uuid.UUID | None = None, lock: bool = False) -> ApiKey:
    """The key with this prefix (in this tenant, when given), or NotFound; `lock` locks its row."""
    stmt = select(ApiKey).where(ApiKey.prefix == prefix)
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    key = s.execute(stmt.with_for_update() if lock else stmt).scalar_one_or_none() if "\x00" not in prefix else None
    if key is None:
        raise NotFound(f"API key {prefix!r} not found")
    return key


def _managed(s: Session, prefix: str, tenant_id: uuid.UUID | None, caller_role: str) -> ApiKey:
    key = get(s, prefix, tenant_id=tenant_id, lock=True)
    if key.role == OPERATOR_ROLE and caller_role != OPERATOR_ROLE:
        raise Forbidden(f"API key {prefix!r} is an operator key: only an operator key or the operator's CLI "
                        "may revoke or rotate it")
    return key


def revoke(s: Session, prefix: str, *, tenant_id: uuid.UUID | None = None,
           caller_role: str = OPERATOR_ROLE) -> ApiKey:
    """Revoke a key: refused from the next request on, on every API process. A key already revoked is
    returned as it is (revoking twice changes nothing)."""
    key = _managed(s, prefix, tenant_id, caller_role)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        s.flush()
    return key


def rotate(s: Session, prefix: str, *, tenant_id: uuid.UUID | None = None,
           caller_role: str = OPERATOR_ROLE) -> tuple[ApiKey, str]:
    """A new key with the old one's tenant, name, role and expiry; the old one is revoked at once.
    Returns (the new key's row, the full new key)."""
    old = _managed(s, prefix, tenant_id, caller_role)
    if old.revoked_at is not None:
        raise Conflict(f"API key {prefix!r} is revoked: create a new key instead", code="key_revoked")
    if old.expires_at is not None and old.expires_at <= utcnow():
        raise Conflict(f"API key {prefix!r} has expired: create a new key instead", code="key_expired")
    old.revoked_at = utcnow()
    return issue(s, old.tenant_id, name=old.name, role=old.role, expires_at=old.expires_at)


def state(key: ApiKey) -> str:
    """`active`, `expired` or `revoked`."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


def to_out(key: ApiKey, caller_key_id: uuid.UUID | None = None) -> dict:
    """The public view of a key: never its hash (and the full key only where it was just made)."""
    return {"prefix": key.prefix, "name": key.name, "role": key.role, "state": state(key),
            "current": key.id == caller_key_id, "created_at": key.created_at, "last_used_at": key.last_used_at,
            "expires_at": key.expires_at, "revoked_at": key.revoked_at}


# Built once: every API request runs the lookup, and building a statement costs more CPU than running it.
_NOW = func.now()
_LOOKUP = select(
    ApiKey.id, ApiKey.tenant_id, ApiKey.role, ApiKey.revoked_at.is_not(None).label("revoked"),
    func.coalesce(ApiKey.expires_at <= _NOW, False).label("expired"),
    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < _NOW - TOUCH_INTERVAL).label("stale"),
).where(ApiKey.key_hash == bindparam("key_hash"))
# Guarded: of several processes that saw the key stale at once, one writes; the others match no row.
_TOUCH = (update(ApiKey).where(ApiKey.id == bindparam("key_id"), or_(
    ApiKey.last_used_at.is_(None), ApiKey.last_used_at < _NOW - TOUCH_INTERVAL)).values(last_used_at=_NOW))


def authenticate(conn: Session | Connection, raw: str) -> Caller:
    """Who a presented key is; KeyRefused when it is unknown, revoked or expired.

    Records last_used_at when it is a minute old or more (then commits `conn`'s transaction), so
    authentication costs one read per request and at most one write per key and minute.
    """
    if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        raise KeyRefused("invalid or revoked API key")
    row = conn.execute(_LOOKUP, {"key_hash": _hash(raw)}).first()
    if row is None:
        raise KeyRefused("invalid or revoked API key")
    if row.revoked:
        raise KeyRefused("this API key has been revoked")
    if row.expired:
        raise KeyRefused("this API key has expired")
    if row.stale:
        conn.execute(_TOUCH, {"key_id": row.id})
        conn.commit()
    return Caller(row.id, row.tenant_id, row.role)


def expiry(days: int | None = None, at: datetime | None = None) -> datetime | None:
    """expires_at from `expires_in_days` or `expires_at` (at most one is given); None: never expires."""
    if days is not None and at is not None:
        raise Invalid.field("expires_at", "give expires_in_days or expires_at, not both")
    return utcnow() + timedelta(days=days) if days is not None else at


def create_for_tenant(s: Session, tenant_id: uuid.UUID, data: dict) -> tuple[ApiKey, str]:
    """POST /keys: a tenant key of the caller's tenant; operator keys come only from the operator's CLI."""
    if data.get("role", TENANT_ROLE) != TENANT_ROLE:
        raise Forbidden("operator keys are created only by the operator: agentruns keys create --role operator")
    return issue(s, tenant_id, name=data.get("name"),
                 expires_at=expiry(data.get("expires_in_days"), data.get("expires_at")))
