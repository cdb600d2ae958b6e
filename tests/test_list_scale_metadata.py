"""The metadata filter's two paths (core.services.runs.list_runs): the tenant's newest rows when they
hold a page of matches, else the GIN index on {tenant_id: metadata} (migration 0009). Both must give
exactly what the plain query gives, page by page, and never another tenant's runs."""
from __future__ import annotations

import uuid

import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import and_, select, text
from sqlalchemy.dialects import postgresql

from app.api.schemas import RunListQuery
from core import db
from core.models import Run
from core.services import runs as run_service
from core.services.cursor import decode_cursor
from tests.conftest import make_key

N = 1500  # more than the newest-rows window (1,000), so a rare value takes the index path

_SEED = text("""
INSERT INTO runs (id, tenant_id, target_kind, target_id, provider, prompt, cwd, timeout, metadata, status,
                  epoch, stdout_truncated, stderr_truncated, created_at, updated_at)
SELECT gen_random_uuid(), :tenant_id, 'computer', 'dev-' || (i % 3), 'custom', 'p' || i, '/tmp', 60,
       jsonb_build_object('every3', CASE WHEN i % 3 = 0 THEN 'yes' ELSE 'no' END,
                          'rare', CASE WHEN i IN (7, 800, 1400) THEN 'yes' ELSE 'no' END,
                          'n', i % 10, 'flag', i % 2 = 0),
       CASE WHEN i % 4 = 0 THEN 'failed' ELSE 'succeeded' END, 1, false, false,
       -- equal created_at for pairs of runs: the id breaks the tie
       now() - make_interval(secs => (i / 2) * 10), now()
FROM generate_series(1, :n) i""")


def _tenant_id(name: str) -> uuid.UUID:
    with db.session() as s:
        return s.execute(text("SELECT id FROM tenants WHERE name = :n"), {"n": name}).scalar_one()


@pytest.fixture(scope="module")
def tenants(app):
    ours, other = _tenant_id(make_key()[0]), _tenant_id(make_key()[0])
    with db.session() as s:
        for t in (ours, other):
            s.execute(_SEED, {"tenant_id": t, "n": N})
    return ours, other


def _reference(tenant_id: uuid.UUID, q: dict, metadata: dict) -> list[uuid.UUID]:
    """Every matching id, newest first, by the plain query (the one list_runs ran before 0009)."""
    cond = [Run.tenant_id == tenant_id, *(run_service._metadata_filter(k, v) for k, v in metadata.items())]
    if "status" in q:
        cond.append(Run.status == q["status"])
    with db.session() as s:
        return list(s.execute(select(Run.id).where(and_(*cond)).order_by(Run.created_at.desc(), Run.id.desc()))
                    .scalars())


def _walk(tenant_id: uuid.UUID, params: dict, metadata: dict) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        q = RunListQuery().load({**params, **({"cursor": cursor} if cursor else {})})
        with db.session() as s:
            rows, cursor = run_service.list_runs(s, tenant_id, q, metadata)
        assert len(rows) <= q["limit"]
        if cursor:
            assert len(rows) == q["limit"]
            assert decode_cursor(cursor) == (rows[-1].created_at, rows[-1].id)
        seen += [r.id for r in rows]
        if not cursor:
            return seen


@pytest.mark.parametrize("params, metadata", [
    ({"limit": "20"}, {"every3": "yes"}),                     # common: the newest rows hold every page
    ({"limit": "20"}, {"rare": "yes"}),                       # rare: the index
    ({"limit": "2"}, {"rare": "yes"}),                        # pages of the index path
    ({"limit": "100"}, {"n": "3"}),                           # the JSON number (and the string)
    ({"limit": "7"}, {"flag": "true", "every3": "yes"}),      # two filters, a boolean
    ({"limit": "20", "status": "failed"}, {"rare": "yes"}),   # with another filter
    ({"limit": "20"}, {"every3": "maybe"}),                   # nothing
])
def test_the_metadata_filter_pages_exactly_like_the_plain_query(tenants, params, metadata):
    ours, other = tenants
    expected = _reference(ours, params, metadata)
    got = _walk(ours, params, metadata)
    assert got == expected
    assert not set(got) & set(_reference(other, params, metadata))


def test_the_scoped_filter_is_answered_by_the_tenant_metadata_index(tenants):
    """_metadata_filter(tenant_id=...) must stay the expression of ix_runs_tenant_metadata."""
    ours, _ = tenants
    stmt = select(Run.id).where(run_service._metadata_filter("rare", "yes", tenant_id=ours))
    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    with db.engine().connect() as conn:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            params = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in compiled.params.items()}
            cur.execute("EXPLAIN " + str(compiled), params)
            plan = "\n".join(r[0] for r in cur.fetchall())
        raw.rollback()
    assert "ix_runs_tenant_metadata" in plan, plan
