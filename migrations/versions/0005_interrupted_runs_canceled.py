"""Interrupted runs read `canceled`: the seed's status table says `canceled` means "the run was
canceled or interrupted". Runs the service interrupted (a lost worker, a warm shutdown) were
recorded `failed`; their cause stays in error.code (`worker_lost`, `worker_shutdown`). Their terminal
status events are rewritten the same way, so the event log and the row agree.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 08:30:00
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

CAUSES = "('worker_lost', 'worker_shutdown')"


def upgrade() -> None:
    op.execute(f"UPDATE runs SET status = 'canceled' WHERE status = 'failed' AND error->>'code' IN {CAUSES}")
    op.execute("UPDATE run_events SET data = jsonb_set(data::jsonb, '{status}', '\"canceled\"')::text "
               "WHERE type = 'status' AND data::jsonb->>'status' = 'failed' "
               f"AND data::jsonb->'error'->>'code' IN {CAUSES}")


def downgrade() -> None:
    op.execute(f"UPDATE runs SET status = 'failed' WHERE status = 'canceled' AND error->>'code' IN {CAUSES}")
    op.execute("UPDATE run_events SET data = jsonb_set(data::jsonb, '{status}', '\"failed\"')::text "
               "WHERE type = 'status' AND data::jsonb->>'status' = 'canceled' "
               f"AND data::jsonb->'error'->>'code' IN {CAUSES}")
