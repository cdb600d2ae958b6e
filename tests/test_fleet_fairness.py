"""Fair sharing: with AGENTRUNS_TENANT_MAX_IN_FLIGHT, one tenant's burst holds at most that many runs
running, waits in order, and does not starve another tenant on the same workers (real worker)."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from core import db
from tests.conftest import make_key, wait_run
from tests.stack import start_worker
from tests.test_e2e_failures import private  # noqa: F401 - a fixture, used through request.getfixturevalue

pytestmark = pytest.mark.e2e
CAP = 2


def test_a_burst_holds_its_share_and_another_tenant_goes_on(request, tmp_path):
    client, env = request.getfixturevalue("private")
    burst = {"Authorization": f"Bearer {make_key()[1]}"}
    other = {"Authorization": f"Bearer {make_key()[1]}"}
    for auth, device_ids in ((burst, ("b1", "b2")), (other, ("o1",))):
        for device_id in device_ids:
            resp = client.post("/api/v1/devices", json={"id": device_id, "kind": "sandbox", "driver": "local",
                                                        "default_cwd": str(tmp_path), "max_concurrent_runs": 5,
                                                        # a pool only our worker serves (not the session's)
                                                        "pool": "fair"},
                               headers=auth)
            assert resp.status_code == 201, resp.get_json()
    body = {"provider": "custom", "command": "sleep 1", "prompt": "p"}
    burst_runs = [client.post("/api/v1/agent-runs", json={**body, "sandbox_id": f"b{1 + i % 2}"},
                              headers=burst).get_json()["data"] for i in range(12)]
    tenant = _tenant_of(burst_runs[0]["id"])
    most, stop = [0], threading.Event()

    def watch():  # the burst's runs running at once, sampled all along
        while not stop.is_set():
            with db.engine().connect() as conn:
                n = conn.execute(text("SELECT count(*) FROM runs WHERE tenant_id = :t AND status = 'running'"),
                                 {"t": tenant}).scalar()
            most[0] = max(most[0], n)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    worker = start_worker(env(tenant_max_in_flight=CAP), concurrency=20, name="fair",
                          options=("--pool", "fair", "--no-webhooks"))
    try:
        watcher.start()
        time.sleep(1.5)  # the burst has its share running and the rest queued
        quick = client.post("/api/v1/agent-runs", json={**body, "command": "true", "sandbox_id": "o1"},
                            headers=other).get_json()["data"]
        started = time.monotonic()
        assert wait_run(client, other, quick["id"])["status"] == "succeeded"
        assert time.monotonic() - started < 5.0  # not behind the burst's 12 runs of 1 s, 2 at a time
        queued_then = [r for r in burst_runs if client.get(f"/api/v1/agent-runs/{r['id']}",
                                                           headers=burst).get_json()["data"]["status"] == "queued"]
        assert queued_then, "the burst had already ended: nothing was shown"
        done = [wait_run(client, burst, r["id"], 40) for r in burst_runs]
        assert all(r["status"] == "succeeded" for r in done)
        for device_id in ("b1", "b2"):  # each device still ran its runs in creation order
            mine = sorted((r for r in done if r["target_id"] == device_id), key=lambda r: r["created_at"])
            starts = [datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) for r in mine]
            # Runs claimed together start on their own threads: their started_at (taken when each
            # command is up) may swap by a few milliseconds. A run taken out of turn would start a
            # whole run (1 s) before an older one.
            pairs = zip(starts, starts[1:], strict=False)
            assert all(later > earlier - timedelta(seconds=0.5) for earlier, later in pairs), [
                (r["id"], r["created_at"], r["started_at"]) for r in mine]
    finally:
        stop.set()
        worker.stop()
    assert most[0] == CAP  # never more than its share, and it got its share


def _tenant_of(run_id: str):
    with db.engine().connect() as conn:
        return conn.execute(text("SELECT tenant_id FROM runs WHERE id = :id"), {"id": run_id}).scalar()


def test_the_sweeper_sends_one_message_per_device_oldest_sent_first(quiet_client, auth, tmp_path):
    """A burst waiting on purpose cannot fill the sweeper's batch: one row per device, the devices
    sent longest ago first, and sending one marks all of the device's queued runs."""
    from core import runstate

    for device_id in ("burst", "calm"):
        quiet_client.post("/api/v1/devices", json={"id": device_id, "kind": "sandbox", "driver": "local",
                                                   "default_cwd": str(tmp_path)}, headers=auth)
    body = {"provider": "custom", "command": "true", "prompt": "p"}
    burst = [quiet_client.post("/api/v1/agent-runs", json={**body, "sandbox_id": "burst"},
                               headers=auth).get_json()["data"]["id"] for _ in range(5)]
    calm = quiet_client.post("/api/v1/agent-runs", json={**body, "sandbox_id": "calm"},
                             headers=auth).get_json()["data"]["id"]
    ids = [*burst, calm]
    with db.transaction() as conn:  # made stale in this transaction only: no other sweeper sees them
        conn.execute(text("UPDATE runs SET created_at = created_at - interval '10 minutes', enqueued_at = NULL "
                          "WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})
        conn.execute(text("UPDATE runs SET enqueued_at = now() - interval '20 minutes' WHERE id = :id"),
                     {"id": calm})  # the calm device was sent longest ago
        mine = [row for row in runstate.stale_queued(conn, 60, limit=10_000) if str(row[0]) in ids]
        assert [(str(r[0]), r[2]) for r in mine] == [(calm, "calm"), (burst[0], "burst")]
        runstate.mark_enqueued(conn, [mine[1][0]])
        marked = conn.execute(text("SELECT count(*) FROM runs WHERE id = ANY(CAST(:ids AS uuid[])) "
                                   "AND enqueued_at = now()"), {"ids": burst}).scalar()
        assert marked == 5
        conn.rollback()
