"""api_keys: name, role (tenant | operator), expires_at, last_used_at

Keys get a role: `tenant` (every key so far) or `operator` (the operator's endpoints, e.g.
/api/v1/admin/stats). A key may expire; last_used_at is written at most once a minute per key
(core.services.keys.authenticate), so it costs no write per request.

Adding nullable columns, and a NOT NULL one with a constant default, rewrites no row (PostgreSQL 11+
stores the default in the catalog). In one transaction the ALTERs hold the table's exclusive lock
until the commit, through the CHECK's validation scan too: api_keys is small, so that is a moment.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 11:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

ROLES = ('tenant', 'operator')


def upgrade() -> None:
    op.add_column('api_keys', sa.Column('name', sa.String(200), nullable=True))
    op.add_column('api_keys', sa.Column('role', sa.String(16), nullable=False, server_default='tenant'))
    op.add_column('api_keys', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_keys', sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    roles = ", ".join(f"'{r}'" for r in ROLES)
    op.execute(f"ALTER TABLE api_keys ADD CONSTRAINT ck_api_keys_role CHECK (role IN ({roles})) NOT VALID")
    op.execute("ALTER TABLE api_keys VALIDATE CONSTRAINT ck_api_keys_role")


def downgrade() -> None:
    op.execute("ALTER TABLE api_keys DROP CONSTRAINT ck_api_keys_role")
    op.drop_column('api_keys', 'last_used_at')
    op.drop_column('api_keys', 'expires_at')
    op.drop_column('api_keys', 'role')
    op.drop_column('api_keys', 'name')
