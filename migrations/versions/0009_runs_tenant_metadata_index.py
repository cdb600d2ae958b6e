"""runs: a GIN index on {tenant_id: metadata}, for the list's metadata[KEY]=VALUE filter, in place of
the one on metadata alone

ix_runs_metadata indexes the metadata of every tenant together: for one tenant's filter it finds
every tenant's runs with that key and value, and the planner either filters them by tenant or ANDs
them with the tenant's whole range of ix_runs_tenant_created. With 1,000,000 runs (one tenant of
200,000), the generic plan of a prepared list query did the latter: 71 to 336 ms (bench/list_scale.py,
docs/list-scale.md). This index's entries hash the tenant together with the key and the value
(jsonb_path_ops hashes a value with its whole path), so a lookup returns exactly that tenant's
matches; core.services.runs.list_runs uses it when the tenant's newest runs do not hold a page of
matches. Built in 4.8 s on those 1,000,000 runs, 16 MB.

Not CONCURRENTLY: migrations run in one transaction (under an advisory lock, migrations/env.py).
On a large table, create it beforehand with
    CREATE INDEX CONCURRENTLY ix_runs_tenant_metadata ON runs
        USING gin (jsonb_set('{}'::jsonb, ARRAY[tenant_id::text], metadata) jsonb_path_ops);
and this migration leaves it as it is (IF NOT EXISTS).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 12:30:00
"""
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The expression must stay exactly the one core.services.runs._metadata_filter builds.
    op.execute("CREATE INDEX IF NOT EXISTS ix_runs_tenant_metadata ON runs "
               "USING gin (jsonb_set('{}'::jsonb, ARRAY[tenant_id::text], metadata) jsonb_path_ops)")
    # Nothing queries it any more: it would only cost every insert its upkeep.
    op.drop_index("ix_runs_metadata", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_metadata", "runs", ["metadata"], unique=False, postgresql_using="gin",
                    postgresql_ops={"metadata": "jsonb_path_ops"})
    op.execute("DROP INDEX IF EXISTS ix_runs_tenant_metadata")
