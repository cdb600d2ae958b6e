"""Engine and session factory; initialised explicitly by the API factory or the worker, never at import."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

_engine: Engine | None = None
_factory: sessionmaker | None = None


def init(url: str, **engine_kwargs) -> Engine:
    """Create the process-wide engine (idempotent per URL)."""
    global _engine, _factory
    if _engine is not None and _engine.url == make_url(url):
        return _engine
    engine_kwargs.setdefault("pool_pre_ping", True)
    engine_kwargs.setdefault("pool_size", 10)
    engine_kwargs.setdefault("max_overflow", 40)
    # Errors must not carry bound values into logs: prompts, outputs and env can hold secrets.
    engine_kwargs.setdefault("hide_parameters", True)
    _engine = create_engine(url, **engine_kwargs)
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
