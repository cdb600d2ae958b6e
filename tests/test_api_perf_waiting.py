"""Long-polls (core.services.waiting): one listener per process wakes the waiters of a run straight to
its terminal answer; nudges that say "not terminal yet" cost no read; a lost nudge is caught by the poll."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from core.services import waiting

BODY = {"prompt": "x", "sandbox_id": "box-1", "provider": "custom", "command": "true"}


def _finish(run_id: str, status: str = "succeeded") -> None:
    from sqlalchemy import select

    from core import db, runstate
    from core.models import Run

    with db.transaction() as conn:
        tenant_id = conn.execute(select(Run.tenant_id).where(Run.id == uuid.UUID(run_id))).scalar_one()
        claimed = runstate.claim_next(conn, tenant_id, "box-1", "w", 30)
        assert claimed is not None and str(claimed.id) == run_id
        runstate.finish(conn, claimed.id, claimed.epoch, status, output="ok", exit_code=0)


def _nudge(app, run_id: str, what: str) -> None:
    from core.notify import publish

    publish(app.extensions["redis"], run_id, what)


@pytest.fixture()
def reads(monkeypatch):
    """How many times waiters read their run."""
    count = {"n": 0}
    real = waiting._read

    def counting(run):
        count["n"] += 1
        return real(run)

    monkeypatch.setattr(waiting, "_read", counting)
    return count


def _until_waiting(app, run_id: str, waiters: int = 1) -> None:
    deadline = time.monotonic() + 5
    while waiting.waiting_runs(app.extensions["redis"]).get(uuid.UUID(run_id), 0) < waiters:
        assert time.monotonic() < deadline, "the waiter never registered"
        time.sleep(0.01)
    time.sleep(0.05)  # its first read


@pytest.mark.parametrize("payload", ["finished", "changed", "succeeded"])
def test_a_nudge_wakes_the_waiter_at_once_and_output_nudges_cost_no_read(quiet_client, auth, local_device, reads,
                                                                          payload):
    app = quiet_client.application
    run = quiet_client.post("/api/v1/agent-runs", json=BODY, headers=auth).get_json()["data"]
    woke = {}

    def worker():
        _until_waiting(app, run["id"])
        for what in ("output", "running", "output"):  # not terminal: nobody reads
            _nudge(app, run["id"], what)
        _finish(run["id"])
        woke["published"] = time.monotonic()
        _nudge(app, run["id"], payload)

    t = threading.Thread(target=worker)
    t.start()
    got = quiet_client.get(f"/api/v1/agent-runs/{run['id']}?wait=20", headers=auth).get_json()["data"]
    answered = time.monotonic()
    t.join()
    assert got["status"] == "succeeded" and got["output"] == "ok"
    assert answered - woke["published"] < 0.8  # the nudge, not the 1 s poll
    assert reads["n"] == 2  # the first read after subscribing, and the one the terminal nudge asked for
    assert waiting.waiting_runs(app.extensions["redis"]) == {}


def test_post_with_wait_is_woken_without_a_first_read(quiet_client, auth, local_device, reads):
    app = quiet_client.application

    def worker():
        deadline = time.monotonic() + 5
        while not waiting.waiting_runs(app.extensions["redis"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (run_id,) = waiting.waiting_runs(app.extensions["redis"])
        _finish(str(run_id))
        _nudge(app, str(run_id), "finished")

    t = threading.Thread(target=worker)
    t.start()
    started = time.monotonic()
    resp = quiet_client.post("/api/v1/agent-runs", json={**BODY, "wait": 20}, headers=auth)
    t.join()
    assert resp.status_code == 201 and resp.get_json()["data"]["status"] == "succeeded"
    assert time.monotonic() - started < 5
    assert reads["n"] == 1


def test_a_lost_nudge_is_caught_by_the_poll(quiet_client, auth, local_device):
    app = quiet_client.application
    run = quiet_client.post("/api/v1/agent-runs", json=BODY, headers=auth).get_json()["data"]
    finished = {}

    def worker():
        _until_waiting(app, run["id"])
        _finish(run["id"])  # and no nudge at all
        finished["at"] = time.monotonic()

    t = threading.Thread(target=worker)
    t.start()
    got = quiet_client.get(f"/api/v1/agent-runs/{run['id']}?wait=20", headers=auth).get_json()["data"]
    t.join()
    assert got["status"] == "succeeded"
    assert time.monotonic() - finished["at"] < waiting.POLL_SECONDS + 1.5


def test_waiters_of_one_run_share_its_subscription_and_all_wake(quiet_app, auth, local_device):
    client = quiet_app.test_client()
    run = client.post("/api/v1/agent-runs", json=BODY, headers=auth).get_json()["data"]
    answers: list[str] = []

    def wait():
        got = quiet_app.test_client().get(f"/api/v1/agent-runs/{run['id']}?wait=20", headers=auth)
        answers.append(got.get_json()["data"]["status"])

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for t in threads:
        t.start()
    _until_waiting(quiet_app, run["id"], waiters=4)
    r = quiet_app.extensions["redis"]
    listener = waiting._listeners[r]
    assert f"agentruns:run:{run['id']}" in listener.subscribed
    _finish(run["id"])
    started = time.monotonic()
    _nudge(quiet_app, run["id"], "finished")
    for t in threads:
        t.join(10)
    assert answers == ["succeeded"] * 4 and time.monotonic() - started < 0.8
    assert waiting.waiting_runs(r) == {} and not listener.waiters
