"""A note is its own event type (clients never read a status of None), and the tables refuse words
that are not in the vocabulary."""
from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.test_api_runs import post_run


@pytest.mark.unit
def test_capped_live_output_ends_with_one_note_event():
    from workers.supervisor import ActiveRun, Supervisor

    ctx = SimpleNamespace(settings=SimpleNamespace(max_events_per_run=3))
    supervisor = Supervisor(ctx)
    run = ActiveRun(uuid.uuid4(), 1, "lock", "token", "slot", "slot-token")
    for i in range(6):
        supervisor.output(run, "stdout", f"line {i}\n".encode())
    assert [kind for kind, _ in run.events] == ["stdout", "stdout", "stdout", "note"]
    assert json.loads(run.events[-1][1]) == {"note": "live output capped at 3 events"}


def _run_id(client, auth) -> uuid.UUID:
    return uuid.UUID(post_run(client, auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()["data"]["id"])


def test_note_events_are_served_as_objects(quiet_client, auth, local_device):
    from core import db, runstate

    run_id = _run_id(quiet_client, auth)
    with db.transaction() as conn:
        runstate.append_events(conn, [{"run_id": run_id, "type": "stdout", "data": "out"},
                                      {"run_id": run_id, "type": "note", "data": json.dumps({"note": "capped"})}])
    events = quiet_client.get(f"/api/v1/agent-runs/{run_id}/events", headers=auth).get_json()["data"]
    assert [(e["type"], e["data"]) for e in events] == [
        ("status", {"status": "queued"}), ("stdout", "out"), ("note", {"note": "capped"})]


@pytest.mark.parametrize(("statement", "constraint"), [
    ("UPDATE runs SET status = 'paused' WHERE id = :id", "ck_runs_status"),
    ("INSERT INTO run_events (run_id, type, data) VALUES (:id, 'progress', '{}')", "ck_run_events_type"),
])
def test_the_tables_refuse_words_outside_the_vocabulary(quiet_client, auth, local_device, statement, constraint):
    from core import db

    run_id = _run_id(quiet_client, auth)
    with pytest.raises(IntegrityError, match=constraint), db.transaction() as conn:
        conn.execute(text(statement), {"id": run_id})


@pytest.mark.unit
def test_finish_refuses_a_status_that_is_not_terminal_and_unknown_fields():
    from core import runstate

    with pytest.raises(ValueError, match="not a terminal status"):
        runstate.finish(None, uuid.uuid4(), 1, "running")
    with pytest.raises(ValueError, match="not a result field"):
        runstate.finish(None, uuid.uuid4(), 1, "failed", colour="red")
