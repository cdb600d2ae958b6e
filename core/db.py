"""Engine and session factory; initialised explicitly by the API factory or the worker, never at import."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from core import pool_check

log = logging.getLogger("agentruns.db")
T = TypeVar("T")
_engine: Engine | None = None
_factory: sessionmaker | None = None


def init(url: str, **engine_kwargs) -> Engine:
    """Create the process-wide engine (idempotent per URL)."""
    global _engine, _factory
    if _engine is not None and _engine.url == make_url(url):
        return _engine
    # No ping per checkout (a round trip): pool_check's cheaper check instead, unless asked for.
    engine_kwargs.setdefault("pool_pre_ping", False)
    engine_kwargs.setdefault("pool_size", 10)
    engine_kwargs.setdefault("max_overflow", 40)
    # Errors must not carry bound values into logs: prompts, outputs and env can hold secrets.
    engine_kwargs.setdefault("hide_parameters", True)
    _engine = create_engine(url, **engine_kwargs)
    if not engine_kwargs["pool_pre_ping"]:
        pool_check.check_on_checkout(_engine)
    _factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def engine() -> Engine:
    if _engine is None:
        raise RuntimeError("core.db.init() has not been called")
    return _engine


@contextmanager
def session() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    if _factory is None:
        raise RuntimeError("core.db.init() has not been called")
    s = _factory()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


@contextmanager
def transaction() -> Iterator[Connection]:
    """A Core connection in a transaction that commits on success: for hot paths that need no ORM."""
    with engine().begin() as conn:
        yield conn


def unreachable(exc: BaseException) -> bool:
    """Whether an error says the database could not be reached (as opposed to a bad statement)."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def retrying(work: Callable[[Connection], T], *, seconds: float, what: str,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """work(conn) in a transaction, run again with backoff while the database is unreachable, for up
    to `seconds` (a PostgreSQL restart takes a few). Errors of any other kind are raised at once.

    Only for work whose effects are fenced or idempotent: when a connection drops during COMMIT, the
    commit may have happened, and the work runs again.
    """
    deadline = time.monotonic() + seconds
    delay, attempt = 0.1, 1
    while True:
        try:
            with transaction() as conn:
                return work(conn)
        except Exception as exc:
            if not unreachable(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unreachable (%s), attempt %d; retrying in %.1f s",
                        what, type(exc).__name__, attempt, delay)
        sleep(delay)
        delay, attempt = min(delay * 2, 1.0), attempt + 1  # at most a second late once it is back
