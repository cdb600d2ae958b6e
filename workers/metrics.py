"""Prometheus metrics of a worker process, served with `agentruns worker --metrics-port PORT`.

Counters are this process's own (a scraper sums them over workers). `agentruns_runs` is read from
PostgreSQL at each scrape, for all tenants: every worker reports the same figure (take the max).
Only counts and durations are exported: no run ids, prompts, tenants or device names.
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

from workers import context

log = logging.getLogger("agentruns.metrics")

DELIVERIES = Counter("agentruns_deliveries", "runs.execute messages handled, by outcome: executed, busy "
                     "(every slot of the device taken), nothing_queued (a duplicate, or served already), missing, "
                     "device_backoff (the device is unreachable and waits for its retry), "
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
    """agentruns_runs{status}: how many runs are queued and running now, and the webhook outbox's
    backlog, read at scrape time."""

    def describe(self):
        return []  # nothing to read when registering: the database may not be up yet

    def collect(self):
        try:
            with _engine().connect() as conn:
                counts = dict(conn.execute(_COUNT_BY_STATUS).all())
                pending, oldest = conn.execute(_OUTBOX).one()
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
