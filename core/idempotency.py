"""Idempotency-Key handling (Stripe and the IETF httpapi draft are the anchors).

Per tenant, at most 255 characters, kept `idempotency_ttl_seconds`. A Redis lock serialises creation
across API processes and hosts; the UNIQUE(tenant_id, key) primary key is the backstop when Redis is
unavailable or a lock expires. The fingerprint is an HMAC of the canonical JSON body.
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import redis
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection, CursorResult, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import db
from core.crypto import keyed_hash
from core.errors import Conflict, Invalid
from core.models import IdempotencyKey, Run
from core.runstate import utcnow

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise Invalid.field("Idempotency-Key", "1 to 255 printable ASCII characters")
    return key


def fingerprint(secret_key: str, body: dict) -> str:
    return keyed_hash(secret_key, json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


# Built once: constructing (and cache-keying) a statement costs more CPU than running it.
_EXISTING = select(IdempotencyKey.fingerprint, IdempotencyKey.run_id).where(
    IdempotencyKey.tenant_id == bindparam("tenant_id"), IdempotencyKey.key == bindparam("key"),
    IdempotencyKey.expires_at > bindparam("now"))
_DELETE = delete(IdempotencyKey).where(IdempotencyKey.tenant_id == bindparam("tenant_id"),
                                       IdempotencyKey.key == bindparam("key"))
_INSERT = insert(IdempotencyKey)


def _existing(conn: Connection, tenant_id: uuid.UUID, key: str) -> Row | None:
    return conn.execute(_EXISTING, {"tenant_id": tenant_id, "key": key, "now": utcnow()}).first()


def _replay(conn: Connection, row: Row, fp: str) -> Run:
    if row.fingerprint != fp:
        raise Invalid("this Idempotency-Key was used with a different request body", code="idempotency_key_reused")
    with Session(conn) as s:
        run = s.get(Run, row.run_id)
    if run is None:  # keys are written in the run's own transaction: this would be a bug
        raise RuntimeError(f"Idempotency-Key row points at a missing run {row.run_id}")
    return run


class _Lock:
    """SET NX PX with a token; released only by its holder. A Redis outage degrades to the DB backstop."""

    def __init__(self, r: redis.Redis, name: str, ttl_ms: int = 30_000):
        self.r, self.name, self.ttl_ms, self.token = r, name, ttl_ms, secrets.token_hex(16)
        self.held = False

    def acquire(self) -> bool:
        try:
            self.held = bool(self.r.set(self.name, self.token, nx=True, px=self.ttl_ms))
            return self.held
        except redis.RedisError:
            return True  # no lock service: the UNIQUE constraint still decides

    def release(self) -> None:
        if self.held:
            try:
                self.r.eval(_RELEASE, 1, self.name, self.token)
            except redis.RedisError:
                pass


def create_once(r: redis.Redis, tenant_id: uuid.UUID, key: str, fp: str, ttl_seconds: int, wait_seconds: float,
                create: Callable[[Connection], Run], *,
                connect: Callable[[], AbstractContextManager[Connection]] | None = None,
                transaction: Callable[[], AbstractContextManager[Connection]] | None = None) -> tuple[Run, bool]:
    """Create a run under an Idempotency-Key; returns (run, replayed).

    `connect` (for reads) and `transaction` (for the create) default to new connections from the
    pool; the API passes its request's connection for both.
    """
    connect = connect or db.engine().connect
    transaction = transaction or db.transaction
    with connect() as conn:
        row = _existing(conn, tenant_id, key)
        if row is not None:
            return _replay(conn, row, fp), True
    lock = _Lock(r, f"agentruns:idem:{tenant_id}:{keyed_hash('', key.encode())}")
    deadline = time.monotonic() + wait_seconds
    while not lock.acquire():
        # Someone else is creating this very request: wait for their commit, then replay it.
        time.sleep(0.05)
        with connect() as conn:
            row = _existing(conn, tenant_id, key)
            if row is not None:
                return _replay(conn, row, fp), True
        if time.monotonic() > deadline:
            raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly",
                           code="idempotency_key_in_use", retry_after=1)
    try:
        try:
            with transaction() as conn:
                row = _existing(conn, tenant_id, key)
                if row is not None:
                    return _replay(conn, row, fp), True
                # An expired key that the purge has not removed yet may be reused.
                conn.execute(_DELETE, {"tenant_id": tenant_id, "key": key})
                run = create(conn)
                conn.execute(_INSERT, {"tenant_id": tenant_id, "key": key, "fingerprint": fp, "run_id": run.id,
                                       "expires_at": utcnow() + timedelta(seconds=ttl_seconds)})
            return run, False
        except IntegrityError:
            with connect() as conn:
                row = _existing(conn, tenant_id, key)
                if row is None:
                    raise
                return _replay(conn, row, fp), True
    finally:
        lock.release()


def purge_expired(s: Session) -> int:
    """Delete keys past their retention; called by the periodic task."""
    result: CursorResult = s.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))  # type: ignore[assignment]
    return result.rowcount
