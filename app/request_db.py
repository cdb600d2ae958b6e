"""One database connection per API request, checked out on first use and returned at teardown.

The key check (app.auth) and the view share it: a request pays for one pool checkout, not one per
step. It runs in autocommit mode, so that each read is one round trip (no BEGIN, no ROLLBACK when it
goes back to the pool); `transaction()` switches it to a real transaction for the writes.

A view that holds its request for long (a long-poll, a stream) calls `release()` first: the pool is
sized for requests that take milliseconds.
"""
from __future__ import annotations

import select
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import g
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine

from core import db

_KEY = "_agentruns_db"
_AUTOCOMMIT = "AUTOCOMMIT"


def connection() -> Connection:
    """The request's connection (autocommit: every statement is its own transaction)."""
    conn = g.get(_KEY)
    if conn is None:
        conn = db.engine().connect().execution_options(isolation_level=_AUTOCOMMIT)
        setattr(g, _KEY, conn)
    return conn


@contextmanager
def transaction() -> Iterator[Connection]:
    """The request's connection in one transaction that commits on success, rolls back on error."""
    conn = connection()
    if conn.in_transaction():  # the logical transaction autocommit reads began: nothing to send
        conn.commit()
    conn.execution_options(isolation_level=conn.default_isolation_level)
    try:
        with conn.begin():
            yield conn
    finally:
        if not conn.invalidated:
            conn.execution_options(isolation_level=_AUTOCOMMIT)


def release(_exc: BaseException | None = None) -> None:
    """Return the request's connection to the pool (teardown_request; views that wait call it first)."""
    conn = g.pop(_KEY, None)
    if conn is not None:
        conn.close()


# How long a pooled connection may sit idle and still be used without a ping.
PING_AFTER_IDLE_SECONDS = 10.0


def check_on_checkout(engine: Engine) -> None:
    """Replace the pool's ping on every checkout (a round trip per request) with a cheaper check.

    A connection that was in use within PING_AFTER_IDLE_SECONDS and has nothing to read is handed
    out as it is; one that was idle longer, or whose socket has something to read (an idle
    connection's socket is silent until the server closes it: a restart, pg_terminate_backend),
    is pinged first, and replaced when the ping fails. For the API's engine, created with
    pool_pre_ping=False; harmless on top of pool_pre_ping.
    """
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
