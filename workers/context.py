"""Per-process worker resources, created on first use (never at import): settings, DB, Redis, supervisor."""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from core import db, device_networks
from core.config import Settings
from workers.device_backoff import DeviceBackoff
from workers.device_cache import DeviceCache
from workers.leases import Leases
from workers.supervisor import Supervisor

if TYPE_CHECKING:
    from celery import Celery


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    leases: Leases
    worker_id: str
    devices: DeviceCache
    supervisor: Supervisor = field(init=False)  # set right after construction: it needs the context itself
    backoff: DeviceBackoff = field(init=False)
    # The Celery app this process sends messages with (built on first use): delayed deliveries, runs
    # passed on to another pool, wake-ups of devices that waited for a tenant's cap.
    celery: Callable[[], Celery] = field(init=False)


_ctx: WorkerContext | None = None
_lock = threading.Lock()


def get() -> WorkerContext:
    """The process's context; the first call connects nothing yet but sets everything up."""
    global _ctx
    with _lock:
        if _ctx is None or _ctx.worker_id.rsplit(":", 1)[-1] != str(os.getpid()):
            settings = Settings.from_env()
            db.init(settings.database_url)
            # One worker runs hundreds of runs in threads: a blocking pool makes a thread wait for a
            # connection instead of failing with "Too many connections" when many finish at once.
            pool = redis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=200, timeout=30,
                                                         socket_connect_timeout=5, socket_timeout=10,
                                                         health_check_interval=30)
            r = redis.Redis(connection_pool=pool)
            ctx = WorkerContext(settings, r, Leases(r), f"{socket.gethostname()}:{os.getpid()}",
                                DeviceCache(settings.secret_key, device_networks.policy(settings)))
            ctx.supervisor = Supervisor(ctx)
            ctx.celery = _sender(settings)
            ctx.backoff = DeviceBackoff(r, settings.device_retry_seconds, ctx.celery)
            _ctx = ctx
        return _ctx


def _sender(settings: Settings):
    """A function returning the Celery app this process sends delayed deliveries with (built on first use)."""
    app: list[Celery] = []

    def get():
        if not app:
            from core.messages import fail_fast, make_celery

            app.append(fail_fast(make_celery(settings)))
        return app[0]

    return get
