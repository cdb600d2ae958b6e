"""The task stream: runs newest first with filters in the URL, and the small JSON feed that keeps
the first page live (runs.js polls it)."""
from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import jsonify, render_template, request, url_for

from agentruns.vocabulary import PROVIDERS, STATUSES
from app.console import filters as run_filters
from app.console import runs_data
from app.console.blueprint import blp, tenant_id
from app.console.present import iso
from core import db
from core.services import devices as device_service


@blp.get("/runs")
def runs():
    """The task stream; live on the first page, cursor-paginated after it."""
    f = run_filters.parse(request.args)
    rows, next_cursor = runs_data.page(tenant_id(), f)
    with db.session() as s:
        device_ids = [d.id for d in device_service.list_all(s, tenant_id())]
    older = (url_for("console.runs") + "?" + urlencode(run_filters.to_args(f, cursor=next_cursor))
             if next_cursor else None)
    newest = url_for("console.runs") + "?" + urlencode(run_filters.to_args(f, cursor=None))
    feed = url_for("console.runs_feed") + "?" + urlencode(run_filters.to_args(f, cursor=None))
    return render_template("console/runs.html", rows=rows, f=f, statuses=STATUSES, providers=PROVIDERS,
                           within=list(run_filters.WITHIN), device_ids=device_ids, older=older, newest=newest,
                           feed=feed if "cursor" not in f.form else None, now=iso(datetime.now(UTC)))


@blp.get("/runs/feed")
def runs_feed():
    """The first page of the filtered stream as JSON, with the server's clock for live durations."""
    f = run_filters.parse(request.args, with_cursor=False)
    rows, _ = runs_data.page(tenant_id(), f)
    return jsonify({"runs": rows, "now": iso(datetime.now(UTC)), "errors": f.errors})
