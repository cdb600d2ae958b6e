"""Prometheus metrics of a worker process, served with `agentruns worker --metrics-port PORT`.

Counters are this process's own (a scraper sums them over workers). `agentruns_runs` is read from
PostgreSQL at each scrape, for all tenants: every worker reports the same figure (take the max); so do
the per-pool gauges `agentruns_pool_*` (core.services.fleet_stats, the figures of GET /api/v1/admin/stats;
live workers and their free slots from the workers' heartbeats in Redis, workers.presence).
Only counts and durations are exported, labelled at most by pool: no run ids, prompts, tenants or
device names.
"""
from __future__ import annotations

import logging
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from core.services import fleet_stats
from workers import context

log = logging.getLogger("agentruns.metrics")

DELIVERIES = Counter("agentruns_deliveries", "runs.execute messages handled, by outcome: executed, busy "
                     "(every slot of the device taken), nothing_queued (a duplicate, or served already), missing, "
                     "device_backoff (the device is unreachable and waits for its retry), rerouted (the device is "
                     "in a pool this worker does not serve: passed on to that pool's queue), "
                     "error (the task raised)",
                     ["outcome"])
FINISHED = Counter("agentruns_runs_finished", "Runs this process recorded as terminal, by status and error code "
                   "(empty when succeeded)", ["status", "error_code"])
DURATION = Histogram("agentruns_run_duration_seconds", "started_at to finished_at of the runs this process "
                     "recorded that had started", ["status"],
                     buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600))
REAPED = Counter("agentruns_runs_reaped", "Runs the reaper ended as canceled/worker_lost")
REENQUEUED = Counter("agentruns_runs_reenqueued", "Stale queued runs the sweeper sent again")
IN_FLIGHT = Gauge("agentruns_runs_in_flight", "Runs executing in this process now")
WEBHOOK_ATTEMPTS = Counter("agentruns_webhook_attempts", "Webhook delivery attempts this process made, by outcome: "
                           "delivered (a 2xx), retry (to be tried again), failed (given up)", ["outcome"])
WEBHOOK_LATENCY = Histogram("agentruns_webhook_request_seconds", "Duration of webhook requests (connect to answer)",
                            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WEBHOOK_DELIVERY_AGE = Histogram("agentruns_webhook_delivery_delay_seconds", "From an event's delivery being "
                                 "written (with the status change) to its receiver's 2xx",
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 6 * 3600, 86400))

_COUNT_BY_STATUS = text("SELECT status, count(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY status")
_OUTBOX = text("SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM webhook_deliveries "
               "WHERE state = 'pending'")
_counts_engine: Engine | None = None
_counts_lock = threading.Lock()


def finished(status: str, error: dict | None, started_at, finished_at) -> None:
    """Count a terminal run this process recorded."""
    FINISHED.labels(status, (error or {}).get("code", "")).inc()
    if started_at is not None and finished_at is not None:
        DURATION.labels(status).observe(max(0.0, (finished_at - started_at).total_seconds()))


class _RunsByStatus(Collector):
    """agentruns_runs{status}: how many runs are queued and running now, the webhook outbox's backlog
    and the per-pool figures, read at scrape time."""

    def describe(self):
        return []  # nothing to read when registering: the database may not be up yet

    def collect(self):
        try:
            with _engine().connect() as conn:
                counts = dict(conn.execute(_COUNT_BY_STATUS).all())
                pending, oldest = conn.execute(_OUTBOX).one()
                pools = fleet_stats.pool_figures(conn)
        except Exception as exc:  # a scrape must not fail because PostgreSQL is away: the gauge is left out
            log.warning("metrics: could not count runs by status: %s", exc)
            return
        family = GaugeMetricFamily("agentruns_runs", "Runs queued and running now, all tenants (from PostgreSQL)",
                                   labels=["status"])
        for status in ("queued", "running"):
            family.add_metric([status], counts.get(status, 0))
        yield family
        yield GaugeMetricFamily("agentruns_webhook_pending", "Webhook deliveries not yet delivered or given up",
                                value=pending)
        yield GaugeMetricFamily("agentruns_webhook_oldest_pending_seconds", "Age of the oldest pending webhook "
                                "delivery: the outbox's lag (0 when none)", value=float(oldest))
        yield from _pool_gauges(pools)


_POOL_GAUGES = (
    ("agentruns_pool_queued_runs", "queued_runs", "Runs queued for the pool's devices, all tenants"),
    ("agentruns_pool_oldest_queued_seconds", "oldest_queued_seconds",
     "Age of the pool's oldest queued run (0 when none): how long work has waited"),
    ("agentruns_pool_runs_in_flight", "runs_in_flight", "Runs running on the pool's devices"),
    ("agentruns_pool_device_slots", "device_slots", "The pool's devices' max_concurrent_runs, summed"),
)
_WORKER_GAUGES = (
    ("agentruns_pool_live_workers", "live_workers", "Live workers serving the pool (heartbeat within 15 s, "
     "not draining); a worker serving several pools counts in each"),
    ("agentruns_pool_free_slots", "free_worker_slots", "Free slots (concurrency less busy threads) of the "
     "pool's live workers"),
)


def _pool_gauges(figures: list[dict]):
    """agentruns_pool_*{pool}: the pools' figures; the worker gauges only when Redis could be read."""
    pools = fleet_stats.with_workers(figures, fleet_stats.live_workers(context.get().redis))
    gauges = _POOL_GAUGES + (_WORKER_GAUGES if pools and pools[0]["live_workers"] is not None else ())
    for name, field, doc in gauges:
        family = GaugeMetricFamily(name, doc, labels=["pool"])
        for pool in pools:
            family.add_metric([pool["pool"]], float(pool[field] or 0))
        yield family


def _engine() -> Engine:
    """A connection of its own per scrape, with short timeouts: a scrape never waits for (or holds)
    one of the runs' pooled connections, and a slow database cannot pile up scrape threads."""
    global _counts_engine
    with _counts_lock:
        if _counts_engine is None:
            _counts_engine = create_engine(
                context.get().settings.database_url, poolclass=NullPool, hide_parameters=True,
                connect_args={"connect_timeout": 3, "options": "-c statement_timeout=3000"})
        return _counts_engine


def serve(port: int, host: str) -> None:
    """Start the HTTP endpoint (a daemon thread) and the gauges that read the process's state."""
    IN_FLIGHT.set_function(lambda: len(context.get().supervisor.active))
    REGISTRY.register(_RunsByStatus())
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%s/metrics", host, port)
