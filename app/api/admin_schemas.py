"""Response and query schemas of the operator's /api/v1/admin endpoints."""
from __future__ import annotations

from marshmallow import Schema, fields

from app.api.schemas import FullMatch, UTCDateTime

_REDIS = "null when Redis could not be read"


class StatsQuery(Schema):
    pool = fields.String(validate=FullMatch(r"^[A-Za-z0-9_.-]{1,64}$"), metadata={
        "description": "only this pool: its figures, its devices and the live workers serving it"})


class PoolStats(Schema):
    pool = fields.String(required=True)
    queued_runs = fields.Integer(required=True, metadata={"description": "runs queued for the pool's devices"})
    oldest_queued_seconds = fields.Float(required=True, allow_none=True, metadata={
        "description": "age of the oldest queued run, in seconds (null: none queued)"})
    runs_in_flight = fields.Integer(required=True, metadata={"description": "runs running on the pool's devices"})
    devices = fields.Integer(required=True)
    device_slots = fields.Integer(required=True, metadata={
        "description": "the devices' max_concurrent_runs, summed: how many runs the pool can hold at once"})
    live_workers = fields.Integer(required=True, allow_none=True, metadata={
        "description": "live workers serving the pool (a heartbeat within 15 s), draining ones not counted; "
                       + _REDIS})
    free_worker_slots = fields.Integer(required=True, allow_none=True, metadata={
        "description": "those workers' free slots (concurrency less busy task threads); a worker serving "
                       "several pools counts in each; " + _REDIS})


class DeviceStats(Schema):
    tenant_id = fields.UUID(required=True)
    tenant = fields.String(required=True, metadata={"description": "the tenant's name"})
    id = fields.String(required=True)
    pool = fields.String(required=True)
    queued_runs = fields.Integer(required=True)
    oldest_queued_seconds = fields.Float(required=True, allow_none=True, metadata={
        "description": "age of its oldest queued run, in seconds (null: none queued)"})
    runs_in_flight = fields.Integer(required=True)
    max_concurrent_runs = fields.Integer(required=True)
    last_connected_at = UTCDateTime(required=True, allow_none=True, metadata={
        "description": "when a worker last connected to it and started a command (null: not recorded, "
                       "in the last 30 days, or Redis could not be read)"})
    connect_failures = fields.Integer(required=True, allow_none=True, metadata={
        "description": "failed connects in a row while it is retried (AGENTRUNS_DEVICE_RETRY_SECONDS); 0 when "
                       "it is not failing; " + _REDIS})
    first_failure_at = UTCDateTime(required=True, allow_none=True, metadata={
        "description": "the first of those failures (null: not failing, or unknown)"})


class WorkerStats(Schema):
    id = fields.String(required=True, metadata={"description": "host:pid, as in a run's worker_id"})
    name = fields.String(required=True, metadata={"description": "the Celery node name (`celery inspect`)"})
    pools = fields.List(fields.String(), required=True, metadata={
        "description": "the pools whose queues it consumes"})
    concurrency = fields.Integer(required=True)
    runs_in_flight = fields.Integer(required=True)
    free_slots = fields.Integer(required=True)
    draining = fields.Boolean(required=True, metadata={
        "description": "a warm shutdown began: it finishes its runs and takes no new one"})


class FleetStats(Schema):
    pools = fields.List(fields.Nested(PoolStats), required=True, metadata={
        "description": "every pool that has devices or live workers, by name"})
    devices = fields.List(fields.Nested(DeviceStats), required=True, metadata={
        "description": "every device of every tenant, the most queued runs first"})
    workers = fields.List(fields.Nested(WorkerStats), required=True, allow_none=True, metadata={
        "description": "the live workers, by name; " + _REDIS})


class FleetStatsEnvelope(Schema):
    data = fields.Nested(FleetStats, required=True)
