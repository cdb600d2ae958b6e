"""Webhook endpoints and their delivery log: create, update, rotate a secret, list, redeliver.

What is sent and when is decided elsewhere: the outbox trigger (migration 0006) writes events and
deliveries with each status change, and workers.webhook_dispatch sends them. Secrets are stored
encrypted; their plaintext goes to the caller once (the answer to a create or a rotation) and to
the dispatcher, which signs with it (`signing_secrets`).

Changes lock an endpoint's row FOR NO KEY UPDATE: the outbox trigger's foreign-key share lock does
not wait for that, so editing an endpoint never holds up a run's status change.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from agentruns.webhooks import generate_secret
from core import outbound
from core.config import Settings
from core.crypto import decrypt_json, encrypt_json
from core.errors import Conflict, Invalid, NotFound
from core.messages import WEBHOOK_CHANNEL
from core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from core.services.cursor import decode_cursor, encode_cursor

_WAKE_DISPATCHER = text(f"SELECT pg_notify('{WEBHOOK_CHANNEL}', '')")
# The API's name for the tenant's per-run endpoint (the secret that signs runs' own webhook_url).
PER_RUN = "per-run"


def event_id(raw: uuid.UUID) -> str:
    return f"evt_{raw.hex}"


def parse_event_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text.removeprefix("evt_"))
    except ValueError:
        return None


def check_url(url: str, settings: Settings, field: str = "url") -> str:
    """The URL, if the server may send to it (core.outbound: https, no internal addresses); else 422."""
    try:
        return outbound.check_url(url, allow_http=settings.webhook_allow_http,
                                  allow_private=settings.webhook_allow_private)
    except outbound.Refused as exc:
        raise Invalid.field(field, str(exc), code="webhook_url_refused") from None


def _seal(secret: str, settings: Settings) -> bytes:
    sealed = encrypt_json(settings.secret_key, {"secret": secret})
    assert sealed is not None
    return sealed


def signing_secrets(endpoint: WebhookEndpoint, secret_key: str, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one in its grace period."""
    secrets = [decrypt_json(secret_key, endpoint.secret_enc)["secret"]]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_enc and expires and expires > now:
        secrets.append(decrypt_json(secret_key, endpoint.previous_secret_enc)["secret"])
    return secrets


def _apply(endpoint: WebhookEndpoint, data: dict) -> None:
    """Set the given fields (a url was checked by the caller, before any row lock)."""
    if "url" in data:
        endpoint.url = data["url"]
    if "events" in data:
        endpoint.events = sorted(set(data["events"]))
    if "filters" in data:
        filters = data["filters"] or {}
        endpoint.filter_target = filters.get("target_id")
        endpoint.filter_provider = filters.get("provider")
        endpoint.filter_metadata = filters.get("metadata") or {}
    if "description" in data:
        endpoint.description = data["description"]
    if "enabled" in data:
        endpoint.enabled = data["enabled"]
        if data["enabled"]:  # an operator re-enabling an endpoint starts its failure clock again
            endpoint.disabled_reason, endpoint.failing_since = None, None


def create(s: Session, tenant_id: uuid.UUID, data: dict, settings: Settings) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (the only time the secret is returned)."""
    secret = generate_secret()
    endpoint = WebhookEndpoint(id=uuid.uuid4(), tenant_id=tenant_id, per_run=False, enabled=True,
                               filter_metadata={}, secret_enc=_seal(secret, settings))
    _apply(endpoint, {"enabled": True, **data, "url": check_url(data["url"], settings)})
    s.add(endpoint)
    s.flush()
    return endpoint, secret


def list_all(s: Session, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    """The tenant's subscriptions, oldest first (the per-run endpoint is addressed as `per-run`)."""
    return list(s.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.per_run.is_(False))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))


def get(s: Session, tenant_id: uuid.UUID, endpoint_id: str, *, lock: bool = False) -> WebhookEndpoint:
    """An endpoint of this tenant by id, or its per-run endpoint by `per-run`; 404 otherwise.

    lock: FOR NO KEY UPDATE (a change that keeps the row; see the module's docstring).
    """
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    if endpoint_id == PER_RUN:
        query = query.where(WebhookEndpoint.per_run.is_(True))
    else:
        try:
            query = query.where(WebhookEndpoint.id == uuid.UUID(endpoint_id))
        except ValueError:
            raise NotFound(f"webhook {endpoint_id!r} not found") from None
    endpoint = s.scalars(query.with_for_update(key_share=True) if lock else query).first()
    if endpoint is None:
        hint = " (it is created by the first run with a webhook_url, or by rotate-secret)" \
            if endpoint_id == PER_RUN else ""
        raise NotFound(f"webhook {endpoint_id!r} not found{hint}")
    return endpoint


def update(s: Session, tenant_id: uuid.UUID, endpoint_id: str, data: dict, settings: Settings) -> WebhookEndpoint:
    if "url" in data:  # the DNS lookup before the row is locked
        data = {**data, "url": check_url(data["url"], settings)}
    endpoint = get(s, tenant_id, endpoint_id, lock=True)
    if endpoint.per_run:
        raise Invalid("the per-run endpoint has no settings to change; rotate its secret instead",
                      code="per_run_endpoint")
    was_enabled = endpoint.enabled
    _apply(endpoint, data)
    s.flush()
    if was_enabled and not endpoint.enabled:
        drop_pending(s.connection(), endpoint.id)
    return endpoint


def delete(s: Session, tenant_id: uuid.UUID, endpoint_id: str) -> None:
    """Delete an endpoint; its pending deliveries are dropped with it. Not the per-run endpoint: runs
    that name a webhook_url rely on its secret."""
    endpoint = get(s, tenant_id, endpoint_id)
    if endpoint.per_run:
        raise Conflict("the per-run endpoint cannot be deleted: runs with a webhook_url are signed with its "
                       "secret (rotate it instead)", code="per_run_endpoint")
    s.delete(endpoint)  # the DELETE locks the row; the outbox trigger skips it meanwhile (migration 0006)


_DROP_PENDING = text("""
UPDATE webhook_deliveries SET state = 'failed', locked_until = NULL, lock_token = NULL,
       last_error = 'endpoint disabled'
WHERE endpoint_id = :endpoint_id AND state = 'pending'""")


def drop_pending(conn: Connection, endpoint_id: uuid.UUID) -> None:
    """A disabled endpoint's pending deliveries end `failed` ("endpoint disabled"): nothing waits for an
    endpoint that may never be enabled again (redeliver sends one again once it is)."""
    conn.execute(_DROP_PENDING, {"endpoint_id": endpoint_id})


_PER_RUN_INSERT = (pg_insert(WebhookEndpoint)
                   .on_conflict_do_nothing(index_elements=["tenant_id"], index_where=text("per_run"))
                   .returning(WebhookEndpoint.id))


def ensure_per_run(conn: Connection, tenant_id: uuid.UUID, settings: Settings) -> bool:
    """The tenant's per-run endpoint, created (with a secret) by its first run that names a webhook_url.
    True when this call created it."""
    return conn.execute(_PER_RUN_INSERT, dict(id=uuid.uuid4(), tenant_id=tenant_id, per_run=True, url=None,
                                       events=[], filter_metadata={}, enabled=True,
                                       secret_enc=_seal(generate_secret(), settings))).first() is not None


def rotate_secret(s: Session, tenant_id: uuid.UUID, endpoint_id: str,
                  settings: Settings) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing beside it for the grace period. `per-run` creates the
    tenant's per-run endpoint if it does not exist yet."""
    created = endpoint_id == PER_RUN and ensure_per_run(s.connection(), tenant_id, settings)
    endpoint = get(s, tenant_id, endpoint_id, lock=True)
    secret = generate_secret()
    if not created:  # a secret made a moment ago, that nobody saw, need not sign on
        endpoint.previous_secret_enc = endpoint.secret_enc
        endpoint.previous_secret_expires_at = datetime.now(UTC) + timedelta(
            seconds=settings.webhook_secret_grace_seconds)
    endpoint.secret_enc = _seal(secret, settings)
    s.flush()
    return endpoint, secret


def to_out(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    out = dict(
        id=PER_RUN if endpoint.per_run else str(endpoint.id), url=endpoint.url, per_run=endpoint.per_run,
        events=list(endpoint.events), description=endpoint.description, enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason, failing_since=endpoint.failing_since,
        filters=dict(target_id=endpoint.filter_target, provider=endpoint.filter_provider,
                     metadata=endpoint.filter_metadata or {}),
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        created_at=endpoint.created_at, updated_at=endpoint.updated_at)
    if secret is not None:
        out["secret"] = secret
    return out


_DELIVERY_FIELDS = (WebhookDelivery.id, WebhookDelivery.event_id, WebhookEvent.type.label("event_type"),
                    WebhookDelivery.run_id, WebhookDelivery.url, WebhookDelivery.state, WebhookDelivery.attempts,
                    WebhookDelivery.last_status_code, WebhookDelivery.last_error, WebhookDelivery.last_latency_ms,
                    WebhookDelivery.next_attempt_at, WebhookDelivery.delivered_at, WebhookDelivery.created_at)


def list_deliveries(s: Session, tenant_id: uuid.UUID, endpoint_id: str, q: dict) -> tuple[list[dict], str | None]:
    """The endpoint's deliveries, newest first, each with its attempts; keyset-paginated."""
    endpoint = get(s, tenant_id, endpoint_id)
    query = (select(*_DELIVERY_FIELDS).join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
             .where(WebhookDelivery.endpoint_id == endpoint.id))
    for name in ("id", "state", "run_id"):
        if name in q:
            query = query.where(getattr(WebhookDelivery, name) == q[name])
    if "event_id" in q:
        query = query.where(WebhookDelivery.event_id == parse_event_id(q["event_id"]))
    if "cursor" in q:
        after = decode_cursor(q["cursor"])
        query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(*after))
    limit = q["limit"]
    rows = [dict(r._mapping) for r in s.execute(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit + 1))]
    next_cursor = encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["id"]) if len(rows) > limit else None
    rows = rows[:limit]
    attempts: dict[uuid.UUID, list[dict]] = {r["id"]: [] for r in rows}
    if rows:
        for a in s.execute(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                           .order_by(WebhookAttempt.id)).scalars():
            attempts[a.delivery_id].append(dict(at=a.at, status_code=a.status_code, error=a.error,
                                                latency_ms=a.latency_ms))
    for row in rows:
        row["event_id"] = event_id(row["event_id"])
        row["url"] = row["url"] or endpoint.url
        row["attempt_log"] = attempts[row["id"]]
        if row["state"] != "pending":
            row["next_attempt_at"] = None
    return rows, next_cursor


def redeliver(s: Session, tenant_id: uuid.UUID, endpoint_id: str, delivery_id: str) -> dict:
    """Send a delivery's event again, as a new delivery with the same event id (receivers de-duplicate)."""
    endpoint = get(s, tenant_id, endpoint_id)
    try:
        did = uuid.UUID(delivery_id)
    except ValueError:
        raise NotFound(f"delivery {delivery_id!r} not found") from None
    old = s.get(WebhookDelivery, did)
    if old is None or old.endpoint_id != endpoint.id:
        raise NotFound(f"delivery {delivery_id!r} not found")
    if not endpoint.enabled:
        raise Conflict("the endpoint is disabled; enable it first", code="webhook_disabled")
    if old.state == "pending":
        raise Conflict("this delivery is still being tried; see next_attempt_at", code="delivery_pending")
    new_id = uuid.uuid4()
    s.execute(insert(WebhookDelivery).values(id=new_id, event_id=old.event_id, endpoint_id=old.endpoint_id,
                                             run_id=old.run_id, event_seq=old.event_seq, url=old.url))
    s.execute(_WAKE_DISPATCHER)  # at commit, as the outbox trigger does
    s.flush()
    rows, _ = list_deliveries(s, tenant_id, endpoint_id, {"limit": 1, "id": new_id})
    return rows[0]
