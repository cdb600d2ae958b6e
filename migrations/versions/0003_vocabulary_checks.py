"""runs.status and run_events.type: CHECK constraints; a note is its own event type

The statuses and event types are defined once in agentruns.vocabulary; these constraints hold the
tables to them (a test compares the two). Notes from the service ("live output capped") were
written as `status` events carrying only {"note": ...}, which clients read as a status of None:
they become `note` events.

The constraints are added NOT VALID and validated afterwards, so the scan of existing rows takes only
a SHARE UPDATE EXCLUSIVE lock and does not block writers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 07:00:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

STATUSES = ('queued', 'running', 'succeeded', 'failed', 'canceled')
EVENT_TYPES = ('status', 'stdout', 'stderr', 'note')


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    op.execute("UPDATE run_events SET type = 'note' WHERE type = 'status' AND data::jsonb ? 'note' "
               "AND NOT data::jsonb ? 'status'")
    op.execute(f"ALTER TABLE runs ADD CONSTRAINT ck_runs_status CHECK (status IN ({_in(STATUSES)})) NOT VALID")
    op.execute(f"ALTER TABLE run_events ADD CONSTRAINT ck_run_events_type CHECK (type IN ({_in(EVENT_TYPES)})) "
               "NOT VALID")
    op.execute("ALTER TABLE runs VALIDATE CONSTRAINT ck_runs_status")
    op.execute("ALTER TABLE run_events VALIDATE CONSTRAINT ck_run_events_type")


def downgrade() -> None:
    op.execute("ALTER TABLE run_events DROP CONSTRAINT ck_run_events_type")
    op.execute("ALTER TABLE runs DROP CONSTRAINT ck_runs_status")
    op.execute("UPDATE run_events SET type = 'status' WHERE type = 'note'")
