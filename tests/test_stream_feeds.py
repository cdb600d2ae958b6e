"""Live event streams share one reader per run per API process (app.api.stream), in this process,
against the real PostgreSQL and Redis."""
from __future__ import annotations

import threading
import time
import uuid

import redis


def _drain(gen, out: list, done: threading.Event) -> None:
    for frame in gen:
        if frame.startswith("id: "):
            out.append(int(frame.split("\n", 1)[0][4:]))
    done.set()


def _output(run_id: uuid.UUID, r: redis.Redis, *texts: str) -> None:
    from core import db, runstate
    from core.notify import publish

    with db.transaction() as conn:
        runstate.append_events(conn, [{"run_id": run_id, "type": "stdout", "data": t} for t in texts])
    publish(r, run_id, "output")


def test_viewers_of_one_run_share_one_reader_and_each_gets_every_event_once(quiet_client, auth, local_device,
                                                                          settings):
    from app.api import stream
    from core import db, runstate
    from core.notify import publish
    from core.services import runs as run_service

    r = redis.Redis.from_url(settings.redis_url)
    resp = quiet_client.post("/api/v1/agent-runs", headers=auth, json={"prompt": "p", "sandbox_id": "box-1"})
    run_id = uuid.UUID(resp.get_json()["data"]["id"])
    first, first_done = [], threading.Event()
    threading.Thread(target=_drain, args=(stream.follow(r, run_id, 0), first, first_done), daemon=True).start()
    _output(run_id, r, "one", "two")
    deadline = time.monotonic() + 10
    while len(first) < 3 and time.monotonic() < deadline:  # queued, one, two
        time.sleep(0.02)
    # A second viewer joins mid-stream: its backlog from the database, then the shared feed.
    second, second_done = [], threading.Event()
    threading.Thread(target=_drain, args=(stream.follow(r, run_id, 0), second, second_done), daemon=True).start()
    deadline = time.monotonic() + 10
    while len(second) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(stream._feeds) == 1 and len(stream._feeds[run_id].viewers) == 2
    _output(run_id, r, "three")
    with db.transaction() as conn:
        tenant = conn.execute(runstate.runs.select().where(runstate.runs.c.id == run_id)).first().tenant_id
        claimed = runstate.claim_next(conn, tenant, "box-1", "test", 30)
        runstate.finish(conn, claimed.id, claimed.epoch, "succeeded")
    publish(r, run_id, "finished")
    assert first_done.wait(10) and second_done.wait(10)
    with db.engine().connect() as conn:
        every = [e.seq for e in run_service.events(conn, run_id, 0, 100)]
    assert first == every and second == every  # queued, one, two, three, running, succeeded
    deadline = time.monotonic() + 5
    while stream._feeds and time.monotonic() < deadline:  # the feed ends with its last viewer
        time.sleep(0.1)
    assert run_id not in stream._feeds

