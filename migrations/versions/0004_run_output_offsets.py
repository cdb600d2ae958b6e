"""runs: stdout_offset and stderr_offset, the output already streamed as events

A run's command runs detached on its device and spools its output there; a worker that takes a run
over (its worker died) re-attaches to the spool and streams the output on from these offsets, which
are written in the transaction that writes the output events they count. Nullable (NULL: nothing
streamed yet), so adding them rewrites no row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 08:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('stdout_offset', sa.BigInteger(), nullable=True))
    op.add_column('runs', sa.Column('stderr_offset', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column('runs', 'stderr_offset')
    op.drop_column('runs', 'stdout_offset')
