"""The take-over transitions against the real PostgreSQL (core/runstate.py): who may re-attach, and
that every write stays fenced by the epoch.

Runs are created through an API whose Redis no worker reads (quiet_client) and moved by hand here.
"""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

from core import db, runstate


@pytest.fixture()
def devices(quiet_client, auth, local_device):
    """An ssh device (never contacted: the tests only move rows) beside the `local` one. Its name never
    resolves (.invalid), so the allow-list (loopback only, in the tests) lets it be created."""
    resp = quiet_client.post("/api/v1/devices", headers=auth, json={
        "id": "far", "kind": "computer", "driver": "ssh", "host": "far.invalid", "username": "u",
        "password": "p", "trust_on_first_use": True})
    assert resp.status_code == 201, resp.get_json()
    return quiet_client


def running(client, auth, device_id: str, *, pgid: int | None, lease: str = "+1 hour", started: str = "-10 seconds"):
    """A run claimed by worker w1 (epoch 1), optionally started with pgid, its lease `lease` from now.

    Leases are made to lapse only inside reap()'s transaction: the session's beat, when another test
    file started it in this process, reaps every lapsed lease it can see, and must not see these.
    """
    resp = client.post("/api/v1/agent-runs", headers=auth, json={
        "prompt": "p", "computer_id" if device_id == "far" else "sandbox_id": device_id, "provider": "custom",
        "command": "true", "timeout": 60})
    run_id = uuid.UUID(resp.get_json()["data"]["id"])
    with db.transaction() as conn:
        tenant = conn.execute(text("SELECT tenant_id FROM runs WHERE id = :id"), {"id": run_id}).scalar_one()
        claimed = runstate.claim_next(conn, tenant, device_id, "w1", 30)
        assert claimed.id == run_id and claimed.epoch == 1
        conn.execute(text("UPDATE runs SET pgid = :pgid, started_at = now() + CAST(:started AS interval), "
                          "lease_until = now() + CAST(:lease AS interval) WHERE id = :id"),
                     {"id": run_id, "pgid": pgid, "started": started, "lease": lease})
    return run_id


def row(run_id):
    with db.transaction() as conn:
        return conn.execute(text("SELECT * FROM runs WHERE id = :id"), {"id": run_id}).one()


def notes(run_id) -> list[str]:
    with db.transaction() as conn:
        data = conn.execute(text("SELECT data FROM run_events WHERE run_id = :id AND type = 'note' ORDER BY seq"),
                            {"id": run_id}).scalars().all()
    return [json.loads(d)["note"] for d in data]


def reap(slack: float = 600.0, expire=(), conn=None):
    """The reaper's pass, after the leases of `expire` lapsed in the same (uncommitted) transaction;
    (ids failed, ids taken over)."""
    if conn is None:
        with db.transaction() as own:
            return reap(slack, expire, own)
    if expire:
        conn.execute(text("UPDATE runs SET lease_until = now() - interval '1 second' WHERE id = ANY(:ids)"),
                     {"ids": list(expire)})
    failed, taken = runstate.reap_expired(conn, 30, slack)
    return {r.id for r in failed}, {r.id for r in taken}


def test_the_reaper_takes_over_only_runs_it_can_reattach(devices, auth):
    attachable = running(devices, auth, "far", pgid=4242)
    never_started = running(devices, auth, "far", pgid=None)  # died in its first ~20 ms
    local = running(devices, auth, "box-1", pgid=4243)  # its command died with its worker
    too_old = running(devices, auth, "far", pgid=4244, started="-2 hours")  # past timeout + slack
    alive = running(devices, auth, "far", pgid=4245)
    failed, taken = reap(expire=[attachable, never_started, local, too_old])
    assert {attachable} <= taken and not {never_started, local, too_old, alive} & taken
    assert {never_started, local, too_old} <= failed and attachable not in failed and alive not in failed
    r = row(attachable)
    assert (r.status, r.epoch, r.worker_id, r.pgid) == ("running", 2, None, 4242)
    assert notes(attachable) == ["taken over for re-attaching: its worker stopped renewing the lease"]
    assert (row(never_started).status, row(never_started).error["code"]) == ("canceled", "worker_lost")
    assert row(alive).epoch == 1


def test_one_worker_reattaches_and_the_old_epoch_writes_nothing(devices, auth):
    run_id = running(devices, auth, "far", pgid=4242)
    with db.transaction() as conn:  # the old worker's output so far: 3 bytes of stdout
        assert runstate.record_output(conn, [(run_id, 1, 3, 0)], [{"run_id": run_id, "type": "stdout", "data": "ab\n"}])
    assert run_id in reap(expire=[run_id])[1]
    with db.transaction() as conn:
        first = runstate.claim_attach(conn, run_id, "w2", 30)
        second = runstate.claim_attach(conn, run_id, "w3", 30)  # a duplicate runs.attach
    assert second is None and first.epoch == 3 and first.pgid == 4242
    assert (first.stdout_offset, first.stderr_offset, first.output_events) == (3, 0, 1)
    def out(epoch, stdout_offset, data):
        return [(run_id, epoch, stdout_offset, 2)], [{"run_id": run_id, "type": "stdout", "data": data}]

    with db.transaction() as conn:
        # The lost worker, still alive somewhere, flushes late output and its result: both fenced.
        assert runstate.record_output(conn, *out(1, 9, "x")) == set()
        assert runstate.finish(conn, run_id, 1, "succeeded") is None
        assert runstate.record_output(conn, *out(3, 6, "cd\n")) == {run_id}
        assert runstate.finish(conn, run_id, 3, "succeeded", output="ab\ncd\n") is not None
    r = row(run_id)
    assert (r.status, r.stdout_offset, r.stderr_offset, r.worker_id) == ("succeeded", 6, 2, "w2")
    with db.transaction() as conn:
        stdout = conn.execute(text("SELECT string_agg(data, '' ORDER BY seq) FROM run_events "
                                   "WHERE run_id = :id AND type = 'stdout'"), {"id": run_id}).scalar_one()
    assert stdout == "ab\ncd\n"
    assert notes(run_id)[-1] == "re-attached by worker w2"


def test_a_worker_shutting_down_hands_its_run_over(devices, auth):
    run_id = running(devices, auth, "far", pgid=4242, lease="+30 seconds")
    with db.transaction() as conn:  # one transaction: its lease, over at once, is never seen by another reaper
        assert runstate.take_over(conn, run_id, 1, 0, "its worker shut down") is not None
        assert runstate.take_over(conn, run_id, 1, 0, "again, with the old epoch") is None
        r = conn.execute(text("SELECT * FROM runs WHERE id = :id"), {"id": run_id}).one()
        assert (r.status, r.epoch, r.worker_id) == ("running", 2, None)
        assert r.lease_until == conn.execute(text("SELECT now()")).scalar()  # over at once
        # The reaper sends it to runs.attach on its next pass, and again if no worker came for it,
        # without a note each time (expire: now() stands still within a transaction).
        assert run_id in reap(expire=[run_id], conn=conn)[1]
        assert run_id in reap(expire=[run_id], conn=conn)[1]
    assert row(run_id).epoch == 4
    assert notes(run_id) == ["taken over for re-attaching: its worker shut down"]
