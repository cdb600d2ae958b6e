"""One database connection per API request, checked out on first use and returned at teardown.

The key check (app.auth) and the view share it: a request pays for one pool checkout, not one per
step. It runs in autocommit mode, so that each read is one round trip (no BEGIN, no ROLLBACK when it
goes back to the pool); `transaction()` switches it to a real transaction for the writes.

A view that holds its request for long (a long-poll, a stream) calls `release()` first: the pool is
sized for requests that take milliseconds.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import g
from sqlalchemy.engine import Connection

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
