"""core.pool_check against a real PostgreSQL: no ping for a connection in use, a replaced one for a
connection the server closed (every process's engine uses it: core.db.init)."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from core import pool_check


@pytest.fixture()
def engine(database_url):
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    pool_check.check_on_checkout(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def pings(engine, monkeypatch):
    count = []
    real = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: count.append(1) or real(conn))
    return count


def _backend(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_in_use_is_handed_out_without_a_ping(engine, pings):
    first = _backend(engine)  # a new connection: nothing checked in yet, so it is pinged
    assert [_backend(engine) for _ in range(5)] == [first] * 5
    assert len(pings) == 1


def test_a_connection_the_server_closed_is_replaced_before_use(engine, pings, database_url):
    first = _backend(engine)
    other = create_engine(database_url)
    try:
        with other.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar_one()
    finally:
        other.dispose()
    # The closed socket reads as readable: pinged, the ping fails, a new connection serves.
    second = _backend(engine)
    assert second != first and len(pings) >= 2


def test_an_idle_connection_is_pinged(engine, pings, monkeypatch):
    _backend(engine)
    monkeypatch.setattr(pool_check, "PING_AFTER_IDLE_SECONDS", -1.0)
    _backend(engine)
    assert len(pings) == 2


def test_every_engine_of_core_db_has_the_check(database_url):
    from core import db

    engine = db.init(database_url)
    assert engine.pool._pre_ping is False and engine.pool.__dict__.get("_agentruns_checked")
