"""Shared fixtures: a real PostgreSQL and Redis (embedded, started here, or given by env), the Flask app.

AGENTRUNS_TEST_DATABASE_URL / AGENTRUNS_TEST_REDIS_URL point the suite at servers you run yourself;
otherwise throwaway servers are started from the pip-shipped binaries (agentruns.embedded).
Each test gets its own tenant, so tests never see each other's rows and no table is truncated.
"""
from __future__ import annotations

import os
import signal
import uuid

import psycopg
import pytest
import redis as redis_lib

from core.config import Settings
from core.crypto import new_secret_key
from core.device_networks import LOOPBACK

pytest_plugins = ["tests.conftest_sshd"]

# A shell running `make test &` from a script ignores SIGINT, and an ignored signal stays ignored in
# every child: the services the tests start could not be interrupted as they are in production. A
# handler is reset to the default in a child, so install one here.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Fixtures that start or reach a server; a test marked `unit` must use none of them.
SERVER_FIXTURES = frozenset({
    "pg_server_url", "database_url", "redis_url", "settings", "app", "client", "redis_client", "api_key", "auth",
    "local_device", "e2e_env", "worker", "ssh_device", "live_server", "quiet_app", "quiet_client", "sshd",
    "sshd_other_host_key", "ssh_spec",
})


def pytest_collection_modifyitems(items):
    """Keep the fast tier honest: a `unit` test that asks for a server fails at collection."""
    for item in items:
        if item.get_closest_marker("unit") is None:
            continue
        used = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but uses server fixtures: {sorted(used)}")


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory):
    url = os.environ.get("AGENTRUNS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from agentruns.embedded import start_postgres

    server = start_postgres(tmp_path_factory.mktemp("pg"), fast=True)
    yield server.url
    server.stop()


def new_database(server_url: str, prefix: str = "agentruns_test") -> tuple[str, str, str]:
    """An empty database on the server: (its SQLAlchemy URL, its plain libpq URL, the admin URL)."""
    from sqlalchemy.engine import make_url

    base = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return (base.set(database=name).render_as_string(hide_password=False),
            base.set(drivername="postgresql", database=name).render_as_string(hide_password=False), admin)


@pytest.fixture(scope="session")
def database_url(pg_server_url):
    """A fresh database with the schema migrated, dropped at the end of the session."""
    url, _, admin = new_database(pg_server_url)
    name = url.rpartition("/")[2]
    from core.migrate import upgrade

    upgrade(url)
    yield url
    from core import db

    if db._engine is not None:
        db._engine.dispose()
    if os.environ.get("AGENTRUNS_TEST_DATABASE_URL"):  # an embedded server is thrown away whole
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"could not drop test database {name}: {exc}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("AGENTRUNS_TEST_REDIS_URL")
    if url:
        yield url
        return
    from agentruns.embedded import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def settings(database_url, redis_url) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, secret_key=new_secret_key(),
                    idempotency_wait_seconds=3.0, lease_seconds=5, reaper_interval_seconds=1.0,
                    queued_stale_seconds=5, allow_local_devices=True, webhook_allow_http=True,
                    webhook_allow_private=True,
                    device_networks=LOOPBACK,  # the test sshd is on 127.0.0.1
                    pools="*")  # tests put devices in pools of their own


@pytest.fixture(scope="session")
def app(settings):
    from app import create_app

    flask_app = create_app(settings)
    flask_app.testing = True
    return flask_app


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def redis_client(redis_url):
    r = redis_lib.Redis.from_url(redis_url)
    yield r
    r.close()


def make_key(tenant_name: str | None = None) -> tuple[str, str]:
    """A new tenant and key; returns (tenant name, raw key)."""
    from core import db
    from core.services.keys import create_key

    name = tenant_name or f"t-{uuid.uuid4().hex[:10]}"
    with db.session() as s:
        _, raw, _ = create_key(s, name)
    return name, raw


@pytest.fixture()
def api_key(app) -> str:
    return make_key()[1]


@pytest.fixture()
def auth(api_key) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture()
def local_device(client, auth, tmp_path) -> dict:
    """A `local` device whose default cwd is a fresh folder."""
    resp = client.post("/api/v1/devices", json={"id": "box-1", "kind": "sandbox", "driver": "local",
                                                "default_cwd": str(tmp_path)}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


# --- end-to-end: real worker processes -------------------------------------------------------------
E2E_OVERRIDES = dict(lease_seconds=3, heartbeat_seconds=0.5, reaper_interval_seconds=1, queued_stale_seconds=5,
                     kill_grace_seconds=1, shutdown_grace_seconds=3, device_retry_seconds=3,
                     # Webhooks: receivers on loopback over http (the operator's opt-in), fast retries.
                     webhook_allow_http=1, webhook_allow_private=1, webhook_retry_base_seconds=0.3)


@pytest.fixture(scope="session")
def e2e_env(settings):
    from tests.stack import service_env

    return service_env(settings, **E2E_OVERRIDES)


@pytest.fixture(scope="session")
def worker(e2e_env):
    """One Celery worker process (threads pool) shared by the end-to-end tests, plus beat."""
    from tests.stack import start_beat, start_worker

    proc = start_worker(e2e_env)
    beat = start_beat(e2e_env)
    yield proc
    beat.stop()
    proc.stop()


@pytest.fixture()
def ssh_device(client, auth, sshd):
    """An ssh device on the test sshd, pinned to its host key, with a fresh working folder."""
    workdir = f"/tmp/agentruns-e2e-{uuid.uuid4().hex[:8]}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    body = {"id": "dev-ssh", "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
            "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key,
            "default_cwd": workdir}
    resp = client.post("/api/v1/devices", json=body, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return {**resp.get_json()["data"], "workdir": workdir}


def wait_run(client, auth, run_id: str, seconds: float = 30) -> dict:
    """Long-poll a run until it is terminal (fails the test if it is not)."""
    resp = client.get(f"/api/v1/agent-runs/{run_id}?wait={int(seconds)}", headers=auth)
    run = resp.get_json()["data"]
    assert run["status"] in ("succeeded", "failed", "canceled"), run
    return run


@pytest.fixture(scope="session")
def live_server(e2e_env, worker):
    """A real gunicorn API (`agentruns api`) on a free port, backed by the session's worker and beat."""
    from tests.sshd import free_port
    from tests.stack import start_api

    port = free_port()
    proc = start_api(e2e_env, port)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="session")
def quiet_app(settings):
    """The API on a Redis database no worker listens to: its runs stay queued until a test moves them."""
    from dataclasses import replace

    from app import create_app

    base, _, _ = settings.redis_url.rpartition("/")
    return create_app(replace(settings, redis_url=f"{base}/15"))


@pytest.fixture()
def quiet_client(quiet_app):
    return quiet_app.test_client()
