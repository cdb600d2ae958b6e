"""Tenants and API keys. A key is shown once; only its SHA-256 and a short visible prefix are stored."""
from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from core.models import ApiKey, Tenant
from core.runstate import utcnow

KEY_PREFIX = "ark_live_"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def get_or_create_tenant(s: Session, name: str) -> Tenant:
    tenant = s.execute(select(Tenant).where(Tenant.name == name)).scalar_one_or_none()
    if tenant is None:
        tenant = Tenant(name=name)
        s.add(tenant)
        s.flush()
    return tenant


def create_key(s: Session, tenant_name: str) -> tuple[Tenant, str, str]:
    """Create (tenant if needed and) a key; returns (tenant, full key, visible prefix)."""
    tenant = get_or_create_tenant(s, tenant_name)
    raw = KEY_PREFIX + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
    prefix = raw[: len(KEY_PREFIX) + 8]
    s.add(ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=_hash(raw)))
    s.flush()
    return tenant, raw, prefix


def revoke_key(s: Session, prefix: str) -> bool:
    """Revoke by visible prefix; False when no live key has it."""
    rows = s.execute(update(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
                     .values(revoked_at=utcnow()).returning(ApiKey.id)).all()
    return bool(rows)


# Built once: every API request runs it, and building a statement costs more CPU than running it.
_TENANT_OF_KEY = select(ApiKey.tenant_id).where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))


def authenticate(s: Session | Connection, raw: str) -> uuid.UUID | None:
    """The tenant id a live key belongs to, or None."""
    if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        return None
    return s.execute(_TENANT_OF_KEY, {"key_hash": _hash(raw)}).scalar_one_or_none()
