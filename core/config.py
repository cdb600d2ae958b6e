"""Configuration from environment variables; one frozen object shared by the API and the workers."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from core import device_networks


def _env(name: str, default, cast=str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if cast is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return cast(raw)


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/agentruns"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Fernet key (urlsafe base64, 32 bytes) that encrypts device and run secrets at rest.
    secret_key: str = ""
    max_prompt_chars: int = 100_000
    max_body_bytes: int = 2 * 1024 * 1024
    idempotency_ttl_seconds: int = 24 * 3600
    idempotency_wait_seconds: float = 5.0
    default_cwd: str = "/workspace"
    default_timeout: int = 1800
    output_cap_bytes: int = 1024 * 1024
    lease_seconds: int = 30
    heartbeat_seconds: float = 1.0
    reaper_interval_seconds: float = 15.0
    queued_stale_seconds: int = 60
    # A run whose device is unreachable before its command starts goes back to the queue and the
    # device is tried again with backoff for this long; then its runs fail `device_unreachable`.
    device_retry_seconds: float = 180.0
    shutdown_grace_seconds: float = 30.0
    kill_grace_seconds: float = 2.0
    # A run whose device stays unreachable this long (the worker keeps reconnecting meanwhile, and the
    # command goes on there, detached) fails `device_lost`.
    device_lost_seconds: float = 300.0
    max_events_per_run: int = 10_000
    # Fair sharing of the workers: a tenant has at most this many runs running at once (0: no cap);
    # its other runs wait in the queue, in order, while other tenants' runs go on.
    tenant_max_in_flight: int = 0
    # The worker pools devices may be put in, besides `default` (comma-separated; `*`: any name).
    # Pools are the operator's: a pool's workers connect to whatever its devices name.
    pools: str = ""
    rate_limit_per_minute: int = 0  # 0 disables the per-tenant limiter
    # Per-tenant quotas (core.quotas; 0: none): devices, runs queued or running, runs created in any
    # 60 seconds. Creating beyond one answers 429 quota_exceeded with Retry-After.
    quota_devices: int = 0
    quota_runs_in_flight: int = 0
    quota_runs_per_minute: int = 0
    # The local driver runs commands as the service's own user on its own hosts (the worker's, and
    # the API's for /test): only for a single-user setup (`agentruns dev`) or tests, never multi-tenant.
    allow_local_devices: bool = False
    # The networks ssh devices may point at (comma-separated CIDRs). Empty: any address but loopback,
    # link-local (cloud metadata), multicast and this service's database and Redis hosts. See
    # core/device_networks.py; the tests list 127.0.0.0/8.
    device_networks: str = ""
    # Webhooks (core.outbound, workers.webhook_dispatch). Receivers must be https on public addresses
    # unless the operator allows http or private addresses (a receiver on the operator's network).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0  # connect, and then the response
    webhook_max_attempts: int = 12  # about a day of retries with the default base
    webhook_retry_base_seconds: float = 10.0  # the first retry's delay; each next one is 3x, capped at 6 h
    webhook_concurrency: int = 16  # requests in flight per worker process
    webhook_disable_after_seconds: float = 3 * 86400  # an endpoint failing this long is disabled
    webhook_secret_grace_seconds: int = 86400  # a rotated secret keeps signing this long
    webhook_retention_days: int = 30  # events and their delivery log are kept this long

    def __post_init__(self) -> None:
        # A typo in the allow-list fails every process at startup, not the first device check.
        device_networks.parse(self.device_networks)

    @classmethod
    def from_env(cls) -> Settings:
        """Read every field from AGENTRUNS_<NAME> (DATABASE_URL and REDIS_URL also bare)."""
        values = {}
        for f in fields(cls):
            default = f.default
            cast = type(default)
            name = f"AGENTRUNS_{f.name.upper()}"
            if f.name in ("database_url", "redis_url"):
                values[f.name] = _env(name, _env(f.name.upper(), default))
            else:
                values[f.name] = _env(name, default, cast)
        return cls(**values)
