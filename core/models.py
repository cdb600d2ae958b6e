"""Tables. Run status is written only by core.runstate; everything else here is plain data."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Run statuses (queued -> running -> succeeded | failed | canceled; queued -> canceled) are defined
# once, in agentruns.vocabulary; CHECK constraints (migration 0003) hold the table to them.
from agentruns.vocabulary import (
    CANCELED,
    DELIVERY_STATES,
    EVENT_TYPES,
    FAILED,
    KEY_ROLES,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    TENANT_ROLE,
    TERMINAL,
)


def _sql_list(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    pass


def _now():
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Migration 0007. role: KEY_ROLES; last_used_at is written at most once a minute (keys.authenticate).
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=TENANT_ROLE, server_default=TENANT_ROLE)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint(f"role IN ({_sql_list(KEY_ROLES)})", name="ck_api_keys_role"),)


class Device(Base):
    __tablename__ = "devices"
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    driver: Mapped[str] = mapped_column(String(16))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    username: Mapped[str | None] = mapped_column(String(200))
    host_key: Mapped[str | None] = mapped_column(Text)
    trust_on_first_use: Mapped[bool] = mapped_column(Boolean, default=False)
    login_shell: Mapped[bool] = mapped_column(Boolean, default=True)
    labels: Mapped[dict] = mapped_column(JSONB, default=dict)
    # The worker pool that serves it (its runs go to that pool's queue: core.messages.queue_for).
    pool: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    max_concurrent_runs: Mapped[int] = mapped_column(Integer, default=1)
    default_cwd: Mapped[str | None] = mapped_column(Text)
    # Non-secret provider settings: {"codex": {"executable": "...", "extra_args": [...]}}
    providers: Mapped[dict] = mapped_column(JSONB, default=dict)
    # Fernet blob of {"private_key", "password", "env", "provider_env": {provider: {...}}}
    secrets_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False)


class Run(Base):
    __tablename__ = "runs"
    __allow_unmapped__ = True  # for `pool` below, which is not a column
    # Not a column: the pool of the run's device when core.services.runs made it (create,
    # create_in_one_statement), for the runs.execute message that follows (core.messages.queue_for).
    pool: str | None = None
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    command: Mapped[str | None] = mapped_column(Text)
    cwd: Mapped[str] = mapped_column(Text)
    timeout: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, default=dict)
    env_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    output: Mapped[str | None] = mapped_column(Text)
    stdout: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[dict | None] = mapped_column(JSONB)
    usage: Mapped[dict | None] = mapped_column(JSONB)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    session_id: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Where this run's webhook events also go (signed with the tenant's per-run secret).
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # Fencing: every claim bumps epoch; every later write names the epoch it holds.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_id: Mapped[str | None] = mapped_column(String(255))
    pgid: Mapped[int | None] = mapped_column(Integer)
    # Bytes of stdout/stderr already written as output events (NULL: none), kept with those events:
    # a worker taking the run over re-attaches and streams on from there, without gap or repeat.
    stdout_offset: Mapped[int | None] = mapped_column(BigInteger)
    stderr_offset: Mapped[int | None] = mapped_column(BigInteger)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False)

    __table_args__ = (
        CheckConstraint(f"status IN ({_sql_list(STATUSES)})", name="ck_runs_status"),
        Index("ix_runs_tenant_created", "tenant_id", text("created_at DESC"), text("id DESC")),
        Index("ix_runs_tenant_target_created", "tenant_id", "target_id", text("created_at DESC"), text("id DESC")),
        Index("ix_runs_tenant_status_created", "tenant_id", "status", text("created_at DESC"), text("id DESC")),
        # metadata[KEY]=VALUE in a list: one tenant's matches (core.services.runs._metadata_filter).
        Index("ix_runs_tenant_metadata",
              text("jsonb_set('{}'::jsonb, ARRAY[tenant_id::text], metadata) jsonb_path_ops"), postgresql_using="gin"),
        # The reaper and the sweeper only look at live runs.
        Index("ix_runs_live", "status", "target_id", "created_at",
              postgresql_where=text("status IN ('queued', 'running')")),
        # A claim takes the device's oldest queued run (core.runstate.claim_next).
        Index("ix_runs_queue", "tenant_id", "target_id", "created_at", "id",
              postgresql_where=text("status = 'queued'")),
    )


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RunEvent(Base):
    """Ordered log of a run's status changes and output chunks; seq is global, so ordered per run too."""
    __tablename__ = "run_events"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(f"type IN ({_sql_list(EVENT_TYPES)})", name="ck_run_events_type"),
        Index("ix_run_events_run_seq", "run_id", "seq"),
    )


class WebhookEndpoint(Base):
    """A tenant's subscription to run events at a URL; or (per_run, no url) the tenant's secret for
    the runs that name their own webhook_url. Rows are matched by the outbox trigger (migration 0006)."""
    __tablename__ = "webhook_endpoints"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    per_run: Mapped[bool] = mapped_column(Boolean, default=False)
    url: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(500))
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    filter_target: Mapped[str | None] = mapped_column(String(200))
    filter_provider: Mapped[str | None] = mapped_column(String(32))
    filter_metadata: Mapped[dict] = mapped_column(JSONB, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Fernet blobs of {"secret": "whsec_..."}; during a rotation's grace period both sign.
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False)


class WebhookEvent(Base):
    """One run event, written by the outbox trigger with the run's row as it was then (`run`)."""
    __tablename__ = "webhook_events"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    run: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """One event on its way to one receiver; per (endpoint, run) they go out in event_seq order."""
    __tablename__ = "webhook_deliveries"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str | None] = mapped_column(Text)  # the run's webhook_url; NULL: the endpoint's url
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = _now()
    # A dispatcher holds a delivery while sending it; an expired hold is taken again (at least once).
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lock_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # clock_timestamp(): a run's events written in one statement get distinct, ordered times.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("clock_timestamp()"),
                                                 nullable=False)

    __table_args__ = (
        CheckConstraint(f"state IN ({_sql_list(DELIVERY_STATES)})", name="ck_webhook_deliveries_state"),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    at: Mapped[datetime] = _now()
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)


__all__ = ["Base", "Tenant", "ApiKey", "Device", "Run", "IdempotencyKey", "RunEvent", "STATUSES", "TERMINAL",
           "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "WebhookEndpoint", "WebhookEvent",
           "WebhookDelivery", "WebhookAttempt"]
