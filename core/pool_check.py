"""A cheaper check of pooled connections than SQLAlchemy's pool_pre_ping (a round trip per checkout).

A connection used within PING_AFTER_IDLE_SECONDS whose socket has nothing to read is handed out as
it is; any other is pinged first, and replaced when the ping fails. An idle connection's socket is
silent until the server closes it (a restart, pg_terminate_backend), so a restart is still noticed
before a statement is sent. core.db.init installs it on every engine.
"""
from __future__ import annotations

import select
import time

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

# How long a pooled connection may sit idle and still be used without a ping.
PING_AFTER_IDLE_SECONDS = 10.0


def check_on_checkout(engine: Engine) -> None:
    """Check the engine's connections on checkout as this module says (once per pool)."""
    if engine.pool.__dict__.get("_agentruns_checked"):
        return
    engine.pool.__dict__["_agentruns_checked"] = True
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info[_CHECKIN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, proxy) -> None:
        idle = time.monotonic() - record.info.get(_CHECKIN, float("-inf"))
        if idle <= PING_AFTER_IDLE_SECONDS and not _readable(dbapi_connection):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception:  # noqa: BLE001 - any failure: hand out another connection
            alive = False
        if not alive:
            raise exc.DisconnectionError("connection failed its ping")


_CHECKIN = "agentruns_checked_in"


def _readable(dbapi_connection) -> bool:
    """Whether the connection's socket has something to read (or is closed), without waiting."""
    try:
        fd = dbapi_connection.pgconn.socket
        poller = _poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # noqa: BLE001 - a connection we cannot check is pinged
        return True


def _poll():
    try:  # the real poll: gevent's would create watchers and switch to the hub for a zero timeout
        from gevent.monkey import get_original
        return get_original("select", "poll")()
    except ImportError:
        return select.poll()
