"""The one-statement create (core.services.runs.create_in_one_statement, which POST /agent-runs uses
when nothing in the run needs a transaction) makes the same run, and leads to the same errors, as the
transactional create (core.services.runs.create)."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from tests.test_api_fuzz_regressions import assert_error

RUNS = "/api/v1/agent-runs"
# Every field of a run but those that differ between two creates.
_VARYING = ("id", "created_at", "updated_at")


@pytest.fixture()
def tenant_id(client, auth, local_device):
    from core import db

    assert client.get(f"{RUNS}?limit=1", headers=auth).status_code == 200
    resp = client.post("/api/v1/devices", json={"id": "box-2", "kind": "computer", "driver": "local", "pool": "p2"},
                       headers=auth)  # no default_cwd: the settings' default applies
    assert resp.status_code == 201, resp.get_json()
    with db.engine().connect() as conn:
        return conn.execute(text("SELECT tenant_id FROM devices WHERE id = 'box-2' ORDER BY created_at DESC "
                                 "LIMIT 1")).scalar_one()


def _data(body: dict) -> dict:
    from app.api.schemas import RunCreate

    data = RunCreate().load(body)
    data.pop("wait")
    return data


def _create_both(tenant_id, body: dict, settings):
    """(one-statement result, transactional result or the error it raised) for the same body."""
    from core import db
    from core.errors import Invalid
    from core.services import runs as run_service

    with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        fast = run_service.create_in_one_statement(conn, tenant_id, _data(body), "req-1", settings)
    try:
        with db.transaction() as conn:
            slow = run_service.create(conn, tenant_id, _data(body), "req-1", settings)
    except Invalid as exc:
        return fast, exc
    return fast, slow


def _shape(run) -> dict:
    from core.run_shape import RunOut

    out = RunOut().dump(run)
    return {**{k: v for k, v in out.items() if k not in _VARYING}, "pool": run.pool}


def _stored(client, auth, run_id) -> dict:
    resp = client.get(f"{RUNS}/{run_id}", headers=auth)
    assert resp.status_code == 200
    return {k: v for k, v in resp.get_json()["data"].items() if k not in _VARYING}


@pytest.mark.parametrize("body", [
    {"prompt": "p", "sandbox_id": "box-1", "provider": "custom", "command": "true"},
    {"prompt": "é ü", "target_id": "box-1", "target_kind": "sandbox", "provider": "custom", "command": "x",
     "cwd": "/srv/x", "timeout": 30, "env": {"A": "1"}, "metadata": {"k": [1, {"x": None}], "n": 1.5}},
    {"prompt": "p", "target_id": "box-2", "provider": "claude-code", "model": "m-1"},  # any kind; no device cwd
    {"prompt": "p", "computer_id": "box-2", "provider": "hermes"},
])
def test_the_one_statement_create_makes_the_transactional_creates_run(client, auth, settings, tenant_id, body):
    from core import db

    fast, slow = _create_both(tenant_id, body, settings)
    assert fast is not None and fast.id != slow.id
    assert _shape(fast) == _shape(slow)
    assert _stored(client, auth, fast.id) == _stored(client, auth, slow.id) == {
        k: v for k, v in _shape(fast).items() if k != "pool"}
    with db.engine().connect() as conn:
        events = conn.execute(text("SELECT run_id, type, data FROM run_events WHERE run_id IN (:a, :b) ORDER BY seq"),
                              {"a": fast.id, "b": slow.id}).all()
    assert [(e.type, e.data) for e in events if e.run_id == fast.id] == [
        (e.type, e.data) for e in events if e.run_id == slow.id] == [("status", '{"status": "queued"}')]


@pytest.mark.parametrize("body, field", [
    ({"prompt": "p", "sandbox_id": "nope", "provider": "custom", "command": "true"}, "target_id"),
    ({"prompt": "p", "computer_id": "box-1", "provider": "custom", "command": "true"}, "target_kind"),
    ({"prompt": "é" * 70_000, "sandbox_id": "box-1", "provider": "hermes"}, "prompt"),  # over hermes' bytes
    ({"prompt": "é" * 70_000, "sandbox_id": "nope", "provider": "hermes"}, "target_id"),  # the device first
])
def test_a_refused_one_statement_create_inserts_nothing_and_the_post_answers_creates_error(
        client, auth, settings, tenant_id, body, field):
    from core import db

    with db.engine().connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM runs WHERE tenant_id = :t"), {"t": tenant_id}).scalar()
    fast, error = _create_both(tenant_id, body, settings)
    assert fast is None
    assert list(error.details["fields"]) == [field]
    with db.engine().connect() as conn:
        after = conn.execute(text("SELECT count(*) FROM runs WHERE tenant_id = :t"), {"t": tenant_id}).scalar()
    assert after == before
    resp = client.post(RUNS, json=body, headers=auth)
    assert_error(resp, 422, "validation_error", field)
    assert resp.get_json()["error"]["details"] == error.details
    assert resp.get_json()["error"]["message"] == str(error)


def test_what_needs_a_transaction_does_not_take_one_statement(settings):
    from core.services.runs import one_statement_will_do

    plain = {"prompt": "p", "target_id": "box-1", "target_kind": None, "provider": "custom", "command": "true"}
    assert one_statement_will_do(plain, settings)
    assert not one_statement_will_do({**plain, "webhook_url": "https://example.com/h"}, settings)
    assert not one_statement_will_do({**plain, "target_selector": {"gpu": "a100"}}, settings)
    assert not one_statement_will_do(plain, replace(settings, quota_runs_in_flight=5))
    assert not one_statement_will_do(plain, replace(settings, quota_runs_per_minute=5))


def test_a_transient_run_reads_as_the_constructed_one():
    from core.models import Run
    from core.run_shape import RunOut
    from core.services.runs import _transient_run

    now = datetime.now(UTC)
    values = dict(id=uuid.uuid4(), tenant_id=uuid.uuid4(), target_kind="sandbox", target_id="b", provider="custom",
                  prompt="p", model=None, command="true", cwd="/w", timeout=5, metadata_={"a": 1}, env_enc=b"x",
                  request_id="r", webhook_url=None, status="queued", epoch=0, stdout_truncated=False,
                  stderr_truncated=False, created_at=now, updated_at=now)
    built, constructed = _transient_run(values), Run(**values)
    assert isinstance(built, Run)
    assert RunOut().dump(built) == RunOut().dump(constructed)
    assert built.output is None and built.pool is None and built.metadata_ == {"a": 1}
