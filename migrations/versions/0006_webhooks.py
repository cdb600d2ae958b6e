"""webhooks: endpoints, an outbox of run events, deliveries and their attempts; runs.webhook_url

The outbox is filled by a trigger on `runs`, in the transaction of the status change it reports, so
core.runstate stays the one writer of run status and no path that changes a status can forget its
event: a process dying after the commit cannot lose one. An event is written only when someone will
receive it (an enabled endpoint of the tenant matches, or the run has a webhook_url), with one
delivery per receiver, and a NOTIFY wakes the dispatcher (workers.webhook_kick) at commit.

Event types: run.queued (the run's INSERT), run.started (started_at first set), run.succeeded,
run.failed, run.canceled (the status becoming terminal). An event carries the run's public columns
as they are after the statement; workers.webhook_dispatch renders them in the API's run shape.
Endpoint changes lock their row FOR NO KEY UPDATE, which the trigger's KEY SHARE does not wait for.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OUTBOX_FUNCTION = r"""
CREATE FUNCTION agentruns_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    types text[] := ARRAY[]::text[];
    event_type text;
    snapshot jsonb;
    new_event uuid;
    new_seq bigint;
    queued_any boolean := false;
BEGIN
    IF TG_OP = 'INSERT' THEN
        types := ARRAY['run.queued'];
    ELSE
        IF NEW.started_at IS NOT NULL AND OLD.started_at IS NULL THEN
            types := types || 'run.started'::text;
        END IF;
        IF NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('succeeded', 'failed', 'canceled') THEN
            types := types || ('run.' || NEW.status);
        END IF;
    END IF;
    -- The common case, a tenant without webhooks, costs one index probe.
    IF cardinality(types) = 0 OR (NEW.webhook_url IS NULL AND NOT EXISTS (
            SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = NEW.tenant_id AND e.enabled AND NOT e.per_run)) THEN
        RETURN NULL;
    END IF;
    -- What the run shape shows (core/run_shape.py), named: a column added to runs later, a secret
    -- say, is not copied into events by default.
    snapshot := jsonb_build_object(
        'id', NEW.id, 'target_kind', NEW.target_kind, 'target_id', NEW.target_id, 'provider', NEW.provider,
        'status', NEW.status, 'prompt', NEW.prompt, 'metadata', NEW.metadata, 'model', NEW.model, 'cwd', NEW.cwd,
        'timeout', NEW.timeout, 'command', NEW.command, 'output', NEW.output, 'stdout', NEW.stdout,
        'stderr', NEW.stderr, 'stdout_truncated', NEW.stdout_truncated, 'stderr_truncated', NEW.stderr_truncated,
        'exit_code', NEW.exit_code, 'error', NEW.error, 'usage', NEW.usage, 'cost_usd', NEW.cost_usd,
        'session_id', NEW.session_id, 'request_id', NEW.request_id, 'webhook_url', NEW.webhook_url,
        'cancel_requested_at', NEW.cancel_requested_at, 'started_at', NEW.started_at,
        'finished_at', NEW.finished_at, 'created_at', NEW.created_at, 'updated_at', NEW.updated_at);
    FOREACH event_type IN ARRAY types LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE agentruns_webhook_matches(e, NEW, event_type));
        INSERT INTO webhook_events (tenant_id, run_id, type, run) VALUES (NEW.tenant_id, NEW.id, event_type, snapshot)
        RETURNING id, seq INTO new_event, new_seq;
        -- SKIP LOCKED: an endpoint being deleted right now (its row locked) gets no delivery, rather
        -- than the run's own status change waiting for that delete and then failing on the foreign key.
        INSERT INTO webhook_deliveries (event_id, endpoint_id, run_id, event_seq, url)
        SELECT new_event, e.id, NEW.id, new_seq, CASE WHEN e.per_run THEN NEW.webhook_url END
        FROM webhook_endpoints e WHERE agentruns_webhook_matches(e, NEW, event_type)
        FOR KEY SHARE OF e SKIP LOCKED;
        queued_any := true;
    END LOOP;
    IF queued_any THEN
        PERFORM pg_notify('agentruns_webhooks', '');
    END IF;
    RETURN NULL;
END $$
"""

# Which receivers get an event: the tenant's per-run endpoint when the run names a webhook_url, and
# every enabled subscription whose event types and filters match.
MATCHES_FUNCTION = r"""
CREATE FUNCTION agentruns_webhook_matches(e webhook_endpoints, r runs, event_type text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT e.tenant_id = r.tenant_id AND e.enabled AND CASE
        WHEN e.per_run THEN r.webhook_url IS NOT NULL
        ELSE e.events && ARRAY[event_type, 'run.*']
             AND (e.filter_target IS NULL OR e.filter_target = r.target_id)
             AND (e.filter_provider IS NULL OR e.filter_provider = r.provider)
             AND r.metadata @> e.filter_metadata
    END
$$
"""


def upgrade() -> None:
    op.add_column('runs', sa.Column('webhook_url', sa.Text(), nullable=True))
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', UUID(as_uuid=True), primary_key=True),
        sa.Column('tenant_id', UUID(as_uuid=True), sa.ForeignKey('tenants.id', ondelete='CASCADE'), nullable=False),
        sa.Column('per_run', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('url', sa.Text(), nullable=True),
        sa.Column('description', sa.String(500), nullable=True),
        sa.Column('events', ARRAY(sa.Text()), nullable=False),
        sa.Column('filter_target', sa.String(200), nullable=True),
        sa.Column('filter_provider', sa.String(32), nullable=True),
        sa.Column('filter_metadata', JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column('enabled', sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column('disabled_reason', sa.Text(), nullable=True),
        sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('secret_enc', sa.LargeBinary(), nullable=False),
        sa.Column('previous_secret_enc', sa.LargeBinary(), nullable=True),
        sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint('per_run = (url IS NULL)', name='ck_webhook_endpoints_url'),
    )
    op.create_index('ix_webhook_endpoints_tenant', 'webhook_endpoints', ['tenant_id', 'created_at'])
    op.create_index('ux_webhook_endpoints_per_run', 'webhook_endpoints', ['tenant_id'], unique=True,
                    postgresql_where=sa.text('per_run'))
    op.create_table(
        'webhook_events',
        sa.Column('id', UUID(as_uuid=True), primary_key=True, server_default=sa.text('gen_random_uuid()')),
        sa.Column('seq', sa.BigInteger(), sa.Identity(), nullable=False, unique=True),
        sa.Column('tenant_id', UUID(as_uuid=True), sa.ForeignKey('tenants.id', ondelete='CASCADE'), nullable=False),
        sa.Column('run_id', UUID(as_uuid=True), sa.ForeignKey('runs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('type', sa.String(32), nullable=False),
        sa.Column('run', JSONB(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index('ix_webhook_events_created', 'webhook_events', ['created_at'])
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', UUID(as_uuid=True), primary_key=True, server_default=sa.text('gen_random_uuid()')),
        sa.Column('event_id', UUID(as_uuid=True), sa.ForeignKey('webhook_events.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('endpoint_id', UUID(as_uuid=True), sa.ForeignKey('webhook_endpoints.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('run_id', UUID(as_uuid=True), nullable=False),
        sa.Column('event_seq', sa.BigInteger(), nullable=False),
        sa.Column('url', sa.Text(), nullable=True),
        sa.Column('state', sa.String(16), nullable=False, server_default='pending'),
        sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lock_token', UUID(as_uuid=True), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('last_latency_ms', sa.Integer(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        # The clock, not the transaction's start: a run's started and succeeded events can be written in
        # one statement, and the delivery log lists newest first by this.
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'),
                  nullable=False),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name='ck_webhook_deliveries_state'),
    )
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['next_attempt_at'],
                    postgresql_where=sa.text("state = 'pending'"))
    op.create_index('ix_webhook_deliveries_order', 'webhook_deliveries', ['endpoint_id', 'run_id', 'event_seq'],
                    postgresql_where=sa.text("state = 'pending'"))
    op.create_index('ix_webhook_deliveries_endpoint', 'webhook_deliveries',
                    ['endpoint_id', sa.text('created_at DESC'), sa.text('id DESC')])
    op.create_index('ix_webhook_deliveries_event', 'webhook_deliveries', ['event_id'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column('delivery_id', UUID(as_uuid=True), sa.ForeignKey('webhook_deliveries.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('latency_ms', sa.Integer(), nullable=False),
    )
    op.create_index('ix_webhook_attempts_delivery', 'webhook_attempts', ['delivery_id', 'id'])
    op.execute(MATCHES_FUNCTION)
    op.execute(OUTBOX_FUNCTION)
    op.execute("CREATE TRIGGER runs_webhook_outbox_insert AFTER INSERT ON runs "
               "FOR EACH ROW EXECUTE FUNCTION agentruns_webhook_outbox()")
    op.execute("CREATE TRIGGER runs_webhook_outbox_update AFTER UPDATE OF status, started_at ON runs "
               "FOR EACH ROW EXECUTE FUNCTION agentruns_webhook_outbox()")


def downgrade() -> None:
    op.execute("DROP TRIGGER runs_webhook_outbox_update ON runs")
    op.execute("DROP TRIGGER runs_webhook_outbox_insert ON runs")
    op.execute("DROP FUNCTION agentruns_webhook_outbox()")
    op.execute("DROP FUNCTION agentruns_webhook_matches(webhook_endpoints, runs, text)")
    op.drop_table('webhook_attempts')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_events')
    op.drop_table('webhook_endpoints')
    op.drop_column('runs', 'webhook_url')
