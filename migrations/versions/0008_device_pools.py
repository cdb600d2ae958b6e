"""devices.pool: the worker pool that serves a device

A run is sent to its device's pool's queue (core.messages.queue_for): `agentruns worker --pool NAME`
consumes only those, so the devices of a private network are served by the workers inside it. A
NOT NULL column with a constant default rewrites no row (PostgreSQL 11+).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 11:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('devices', sa.Column('pool', sa.String(64), nullable=False, server_default='default'))
    # The admin stats and the selector group a tenant's devices by pool.
    op.create_index('ix_devices_pool', 'devices', ['pool'])


def downgrade() -> None:
    op.drop_index('ix_devices_pool', 'devices')
    op.drop_column('devices', 'pool')
