"""The task stream's data: a page of core.services.runs.list_runs plus the two columns its summary
lacks (started_at for durations, request_id), read for that page's ids by primary key."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from app.console import present
from app.console.filters import Filters
from core import db
from core.models import Run
from core.services import runs as run_service


def page(tenant_id: uuid.UUID, filters: Filters) -> tuple[list[dict], str | None]:
    """Rows of one page, newest first, and the cursor of the next page."""
    with db.session() as s:
        runs, next_cursor = run_service.list_runs(s, tenant_id, filters.query, filters.metadata)
        extra = {}
        if runs:
            # At most one page of ids, by primary key: as fast as the page itself at any table size.
            extra = {r.id: r for r in s.execute(
                select(Run.id, Run.started_at, Run.request_id)
                .where(Run.tenant_id == tenant_id, Run.id.in_([r.id for r in runs])))}
    rows = []
    for run in runs:
        more = extra.get(run.id)
        rows.append(present.row(run, more.started_at if more else None, more.request_id if more else None))
    return rows, next_cursor
