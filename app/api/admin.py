"""/api/v1/admin: the operator's endpoints (operator keys only; a tenant key gets 403 `forbidden`)."""
from __future__ import annotations

from flask import current_app

from app.api.admin_schemas import FleetStatsEnvelope, StatsQuery
from app.api.parser import Blueprint
from app.auth import operator_required
from core import db
from core.services import fleet_stats

blp = Blueprint("admin", __name__, url_prefix="/api/v1", description="Operator")


@blp.route("/admin/stats", methods=["GET"])
@operator_required
@blp.arguments(StatsQuery, location="query")
@blp.response(200, FleetStatsEnvelope)
def stats(query):
    """The fleet, all tenants: per pool queued runs, the oldest one's age, runs in flight, devices, slots,
    live workers and their free slots; per device its runs and connect health; the live workers. What an
    autoscaler or on-call reads (the workers' Prometheus gauges agentruns_pool_* are the same figures)."""
    with db.engine().connect() as conn:
        return {"data": fleet_stats.snapshot(conn, current_app.extensions["redis"], query.get("pool"))}
