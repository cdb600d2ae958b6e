"""core.db.retrying: a transaction run again while PostgreSQL restarts, and not for other errors."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError


@pytest.fixture()
def own_postgres(tmp_path, settings):
    """A PostgreSQL of this test's own as the process's database, the session's put back after."""
    from agentruns.embedded import start_postgres
    from core import db

    server = start_postgres(tmp_path / "pg", fast=True)
    db.init(server.url)
    try:
        yield server
    finally:
        db.init(settings.database_url)
        server.stop()


def test_work_is_retried_until_the_database_is_back(own_postgres, caplog):
    from agentruns.embedded import start_postgres
    from core import db

    with db.transaction() as conn:  # a pooled connection that the restart will break
        conn.execute(text("CREATE TABLE t (n int)"))
    port, data_dir = own_postgres.port, own_postgres.data_dir
    own_postgres.stop()
    restarted = []
    threading.Thread(target=lambda: (time.sleep(1.5), restarted.append(
        start_postgres(data_dir, port=port, fast=True))), daemon=True).start()

    def work(conn):
        conn.execute(text("INSERT INTO t VALUES (1)"))
        return conn.execute(text("SELECT count(*) FROM t")).scalar_one()

    started = time.monotonic()
    try:
        assert db.retrying(work, seconds=20, what="test insert") == 1  # once, despite the retries
        assert time.monotonic() - started >= 1.0  # it waited for the server ...
        assert "test insert: database unreachable" in caplog.text  # ... by retrying
    finally:
        for server in restarted:
            server.stop()


def test_gives_up_after_its_time(own_postgres):
    from core import db

    own_postgres.stop()
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        db.retrying(lambda conn: conn.execute(text("SELECT 1")), seconds=1, what="test")
    assert db.unreachable(caught.value) and time.monotonic() - started < 5


def test_other_errors_are_not_retried(own_postgres):
    from core import db

    calls = []

    def broken(conn):
        calls.append(1)
        conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(ProgrammingError):
        db.retrying(broken, seconds=10, what="test")
    assert calls == [1]
