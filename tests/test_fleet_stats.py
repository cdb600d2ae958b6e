"""Visibility for autoscaling and on-call: GET /api/v1/admin/stats (operator keys only), the workers'
agentruns_pool_* gauges, the workers' heartbeats in Redis and `agentruns status`.

The runs stay queued: they are made through `quiet_client`, whose Redis database no worker reads.
Every pool here has a name of its own, so the figures of other tests' devices (the stats are of all
tenants) never mix in.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from agentruns.cli import main
from core import db, presence, runstate
from core.messages import queue_for
from core.services import fleet_stats
from core.services.keys import create_key
from tests.test_api_fuzz_regressions import assert_error
from tests.test_metrics import scrape, value
from tests.test_openapi_spec import check_answer

STATS = "/api/v1/admin/stats"
OLD = 120  # seconds: the age given to the oldest queued run


def _bearer(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


def _key(tenant: str, role: str = "tenant") -> tuple[uuid.UUID, str]:
    with db.session() as s:
        t, raw, _ = create_key(s, tenant, role=role)
        return t.id, raw


def _device(client, auth, device_id: str, pool: str, slots: int, cwd: Path) -> None:
    resp = client.post("/api/v1/devices", headers=auth, json={
        "id": device_id, "kind": "sandbox", "driver": "local", "default_cwd": str(cwd), "pool": pool,
        "max_concurrent_runs": slots})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["data"]["pool"] == pool


def _run(client, auth, device_id: str) -> str:
    resp = client.post("/api/v1/agent-runs", headers=auth, json={
        "prompt": "p", "sandbox_id": device_id, "provider": "custom", "command": "echo ok"})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]["id"]


@pytest.fixture(scope="module")
def fleet(quiet_app, tmp_path_factory):
    """Pool gpu-*: g1 (2 slots) with 3 queued runs, the oldest OLD seconds old, and g2 (1 slot) with one
    run claimed (running) and a newer one queued; pool cpu-*: c1, idle. An operator key of another
    tenant, and a tenant key."""
    client, tag = quiet_app.test_client(), uuid.uuid4().hex[:8]
    tenant = f"t-stats-{tag}"
    tenant_id, raw = _key(tenant)
    _, operator = _key(f"ops-{tag}", role="operator")
    auth, cwd = _bearer(raw), tmp_path_factory.mktemp("fleet")
    gpu, cpu = f"gpu-{tag}", f"cpu-{tag}"
    _device(client, auth, "g1", gpu, 2, cwd)
    _device(client, auth, "g2", gpu, 1, cwd)
    _device(client, auth, "c1", cpu, 1, cwd)
    queued = [_run(client, auth, "g1") for _ in range(3)]
    _run(client, auth, "g2")
    with db.transaction() as conn:
        conn.execute(text("UPDATE runs SET created_at = now() - make_interval(secs => :old) WHERE id = :id"),
                     {"old": OLD, "id": queued[0]})
        assert runstate.claim_next(conn, tenant_id, "g2", "test-worker:1", 600) is not None
    _run(client, auth, "g2")
    return SimpleNamespace(client=client, tenant=tenant, tenant_id=tenant_id, tenant_key=raw, operator=operator,
                           gpu=gpu, cpu=cpu, redis=quiet_app.extensions["redis"])


def _stats(fleet, **query) -> dict:
    resp = fleet.client.get(STATS, headers=_bearer(fleet.operator), query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["data"]


def _pool(stats: dict, name: str) -> dict:
    return next(p for p in stats["pools"] if p["pool"] == name)


def _devices(stats: dict, fleet) -> dict[str, dict]:
    return {d["id"]: d for d in stats["devices"] if d["tenant_id"] == str(fleet.tenant_id)}


def test_an_operator_sees_each_pools_backlog_and_its_oldest_run(fleet):
    stats = _stats(fleet)
    gpu = _pool(stats, fleet.gpu)
    assert OLD <= gpu.pop("oldest_queued_seconds") < OLD + 60
    assert gpu == {"pool": fleet.gpu, "queued_runs": 4, "runs_in_flight": 1, "devices": 2, "device_slots": 3,
                   "live_workers": 0, "free_worker_slots": 0}
    assert _pool(stats, fleet.cpu) == {"pool": fleet.cpu, "queued_runs": 0, "oldest_queued_seconds": None,
                                       "runs_in_flight": 0, "devices": 1, "device_slots": 1, "live_workers": 0,
                                       "free_worker_slots": 0}
    assert isinstance(stats["workers"], list)
    # Another tenant's operator key sees every tenant's devices, the busiest first.
    mine = _devices(stats, fleet)
    assert {d: (mine[d]["pool"], mine[d]["queued_runs"], mine[d]["runs_in_flight"], mine[d]["max_concurrent_runs"])
            for d in mine} == {"g1": (fleet.gpu, 3, 0, 2), "g2": (fleet.gpu, 1, 1, 1), "c1": (fleet.cpu, 0, 0, 1)}
    assert mine["g1"]["tenant"] == fleet.tenant and OLD <= mine["g1"]["oldest_queued_seconds"] < OLD + 60
    assert 0 <= mine["g2"]["oldest_queued_seconds"] < 30 and mine["c1"]["oldest_queued_seconds"] is None
    order = [d["id"] for d in stats["devices"] if d["tenant_id"] == str(fleet.tenant_id)]
    assert order.index("g1") < order.index("g2") < order.index("c1")
    # One pool only: its figures and its devices.
    only = _stats(fleet, pool=fleet.cpu)
    assert [p["pool"] for p in only["pools"]] == [fleet.cpu]
    assert {d["pool"] for d in only["devices"]} == {fleet.cpu} and "c1" in _devices(only, fleet)
    assert _stats(fleet, pool=f"none-{fleet.gpu}") == {"pools": [], "devices": [], "workers": []}


def test_the_answer_matches_the_document_and_only_operators_get_it(fleet):
    client = fleet.client
    spec = client.get("/api/v1/openapi.json").get_json()
    for resp in (client.get(STATS, headers=_bearer(fleet.operator)),
                 client.get(STATS, headers=_bearer(fleet.tenant_key)),
                 client.get(STATS, headers=_bearer(fleet.operator), query_string={"pool": "no spaces"}),
                 client.get(STATS)):
        check_answer(spec, "get", STATS, resp)
    body = assert_error(client.get(STATS, headers=_bearer(fleet.tenant_key)), 403, "forbidden")
    assert "operator" in body["error"]["message"]
    # The role is checked before the query is read: a tenant learns nothing from a bad parameter.
    assert_error(client.get(STATS, headers=_bearer(fleet.tenant_key), query_string={"pool": "x y"}), 403, "forbidden")
    assert_error(client.get(STATS, headers=_bearer(fleet.operator), query_string={"pool": "x y"}),
                 422, "validation_error")
    assert_error(client.get(STATS), 401, "unauthorized")


def test_without_redis_the_database_figures_still_answer(fleet, settings):
    from dataclasses import replace

    from app import create_app
    from tests.sshd import free_port

    app = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens
    client = app.test_client()
    resp = client.get(STATS, headers=_bearer(fleet.operator), query_string={"pool": fleet.gpu})
    check_answer(client.get("/api/v1/openapi.json").get_json(), "get", STATS, resp)
    stats = resp.get_json()["data"]
    assert stats["workers"] is None
    assert [(p["queued_runs"], p["live_workers"], p["free_worker_slots"]) for p in stats["pools"]] == [(4, None, None)]
    assert {(d["last_connected_at"], d["connect_failures"], d["first_failure_at"]) for d in stats["devices"]} == {
        (None, None, None)}


def test_device_connects_and_failures_come_from_the_workers_records(fleet):
    from workers.device_backoff import DeviceBackoff

    before = _devices(_stats(fleet), fleet)
    assert [(before[d]["last_connected_at"], before[d]["connect_failures"], before[d]["first_failure_at"])
            for d in ("g1", "g2")] == [(None, 0, None)] * 2
    presence.device_connected(fleet.redis, fleet.tenant_id, "g1")
    backoff = DeviceBackoff(fleet.redis, 60, sender=None)  # what a worker counts a failed connect with
    backoff.failed(fleet.tenant_id, "g2")
    backoff.failed(fleet.tenant_id, "g2")
    after = _devices(_stats(fleet), fleet)
    connected = after["g1"]["last_connected_at"]
    assert connected.endswith("Z") and abs(_epoch(connected) - time.time()) < 5
    assert (after["g1"]["connect_failures"], after["g1"]["first_failure_at"]) == (0, None)
    assert after["g2"]["connect_failures"] == 2 and abs(_epoch(after["g2"]["first_failure_at"]) - time.time()) < 5
    assert after["g2"]["last_connected_at"] is None
    backoff.suspect(fleet.tenant_id, "g2")
    backoff.reached(fleet.tenant_id, "g2")  # a run reached it: the failures end
    assert _devices(_stats(fleet), fleet)["g2"]["connect_failures"] == 0


def _epoch(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def test_live_workers_and_free_slots_come_from_heartbeats(fleet):
    from workers.presence import Heartbeat

    pools = [fleet.gpu, "default"]
    busy = {"runs": 3, "draining": False}
    one = Heartbeat(fleet.redis, f"host-a:{uuid.uuid4().hex[:6]}", "agentruns@host-a", lambda: pools, 8,
                    in_flight=lambda: busy["runs"], busy=lambda: 2, draining=lambda: busy["draining"], interval=0.1)
    other = Heartbeat(fleet.redis, f"host-b:{uuid.uuid4().hex[:6]}", "agentruns@host-b", lambda: [fleet.gpu], 4,
                      in_flight=lambda: 0, busy=lambda: 0, draining=lambda: False, ttl=0.5)
    one.start()
    other.beat()  # one beat, no thread: it lapses after its TTL
    try:
        stats = _stats(fleet, pool=fleet.gpu)
        assert (_pool(stats, fleet.gpu)["live_workers"], _pool(stats, fleet.gpu)["free_worker_slots"]) == (2, 5 + 4)
        mine = {w["id"]: w for w in stats["workers"]}
        assert mine[one.worker_id] == {"id": one.worker_id, "name": "agentruns@host-a", "pools": pools,
                                       "concurrency": 8, "runs_in_flight": 3, "free_slots": 5, "draining": False}
        busy["draining"] = True  # a warm shutdown began: listed, but neither live for new runs nor free

        def settled(stats) -> bool:  # the other's TTL lapsed and one's next beat said it drains
            return ({w["id"]: w["draining"] for w in stats["workers"]} == {one.worker_id: True}
                    and (_pool(stats, fleet.gpu)["live_workers"], _pool(stats, fleet.gpu)["free_worker_slots"])
                    == (0, 0))

        deadline = time.monotonic() + 10
        while not settled(stats := _stats(fleet, pool=fleet.gpu)):
            assert time.monotonic() < deadline, stats
            time.sleep(0.1)
    finally:
        one.stop()
    assert one.worker_id not in {w["id"] for w in _stats(fleet)["workers"]}  # gone at once, not after the TTL


@pytest.mark.unit
def test_the_workers_pools_are_the_queues_it_consumes(monkeypatch):
    from workers.device_backoff import key
    from workers.presence import consumed_pools

    def consumer(*queues):
        return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(
            consume_from=dict.fromkeys(queues)))))

    assert consumed_pools(consumer("agentruns", queue_for("gpu"), "agentruns.webhooks")) == ["default", "gpu"]
    assert consumed_pools(consumer("agentruns.webhooks")) == []  # a webhooks-only worker serves no pool
    monkeypatch.setenv("AGENTRUNS_WORKER_POOLS", "eu, gpu,eu")
    assert consumed_pools(object()) == ["eu", "gpu"]  # no consumer to read: the environment
    assert [presence.pool_of_queue(queue_for(p)) for p in ("default", "a.b-c")] == ["default", "a.b-c"]
    tenant = uuid.uuid4()
    assert presence.backoff_key(tenant, "d") == key(tenant, "d")  # the stats read what the workers write


@pytest.mark.unit
def test_pools_merge_with_the_workers_that_serve_them():
    figures = [{"pool": "a", "devices": 1, "device_slots": 2, "queued_runs": 5, "runs_in_flight": 1,
                "oldest_queued_seconds": 9.0}]
    workers = [{"pools": ["a", "b"], "free_slots": 3, "draining": False},
               {"pools": ["b"], "free_slots": 7, "draining": True}]
    merged = fleet_stats.with_workers(figures, workers)
    assert [(p["pool"], p["live_workers"], p["free_worker_slots"], p["queued_runs"]) for p in merged] == [
        ("a", 1, 3, 5), ("b", 1, 3, 0)]
    assert [(p["live_workers"], p["free_worker_slots"]) for p in fleet_stats.with_workers(figures, None)] == [
        (None, None)]


@pytest.fixture(scope="module")
def metered_worker(e2e_env):
    """A worker of a pool of its own (`--pool`, 4 threads) serving Prometheus metrics."""
    from tests.sshd import free_port
    from tests.stack import start_worker

    pool, port = f"served-{uuid.uuid4().hex[:8]}", free_port()
    proc = start_worker(e2e_env, concurrency=4, name="stats", metrics_port=port,
                        options=("--pool", pool, "--no-webhooks"))
    yield pool, f"http://127.0.0.1:{port}/metrics"
    proc.stop()


@pytest.mark.e2e
def test_pool_gauges_on_a_workers_metrics_endpoint(fleet, metered_worker):
    _, url = metered_worker
    samples = scrape(url)
    assert value(samples, "agentruns_pool_queued_runs", pool=fleet.gpu) == 4
    assert OLD <= value(samples, "agentruns_pool_oldest_queued_seconds", pool=fleet.gpu) < OLD + 60
    assert value(samples, "agentruns_pool_runs_in_flight", pool=fleet.gpu) == 1
    assert value(samples, "agentruns_pool_device_slots", pool=fleet.gpu) == 3
    assert ("agentruns_pool_queued_runs", (("pool", fleet.cpu),)) in samples  # an idle pool is a 0, not absent
    assert value(samples, "agentruns_pool_oldest_queued_seconds", pool=fleet.cpu) == 0
    # Labelled by pool alone: no tenant, device or run in a label.
    pool_samples = [labels for (name, labels) in samples if name.startswith("agentruns_pool_")]
    assert pool_samples and all([k for k, _ in labels] == ["pool"] for labels in pool_samples)


WIRED = "presence" in (Path(__file__).parent.parent / "workers" / "tasks.py").read_text()


@pytest.mark.e2e
@pytest.mark.skipif(not WIRED, reason="workers/tasks.py does not import workers.presence yet")
def test_a_real_worker_is_live_in_its_pool_with_its_free_slots(metered_worker):
    pool, url = metered_worker
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(url)
        if value(samples, "agentruns_pool_live_workers", pool=pool) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(samples, "agentruns_pool_live_workers", pool=pool) == 1
    assert value(samples, "agentruns_pool_free_slots", pool=pool) == 4


RUNNER_RECORDS = "presence.device_connected" in (Path(__file__).parent.parent / "workers" / "runner.py").read_text()


@pytest.mark.e2e
@pytest.mark.skipif(not (WIRED and RUNNER_RECORDS), reason="the worker does not record device connects yet")
def test_a_run_records_its_devices_last_connect(metered_worker, client, tmp_path):
    pool, _ = metered_worker
    tag = uuid.uuid4().hex[:8]
    _, raw = _key(f"t-connect-{tag}")
    _, operator = _key(f"ops-connect-{tag}", role="operator")
    _device(client, _bearer(raw), "box", pool, 1, tmp_path)
    run_id = _run(client, _bearer(raw), "box")
    done = client.get(f"/api/v1/agent-runs/{run_id}?wait=30", headers=_bearer(raw)).get_json()["data"]
    assert done["status"] == "succeeded", done
    resp = client.get(STATS, headers=_bearer(operator), query_string={"pool": pool})
    box = next(d for d in resp.get_json()["data"]["devices"] if d["tenant"] == f"t-connect-{tag}")
    assert box["last_connected_at"] is not None and abs(_epoch(box["last_connected_at"]) - time.time()) < 30
    assert (box["queued_runs"], box["runs_in_flight"], box["connect_failures"]) == (0, 0, 0)


@pytest.fixture(scope="module")
def api_url(quiet_app):
    """quiet_app over real HTTP, for the CLI (its SDK speaks HTTP)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, quiet_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _status(api_url: str, key: str, *args: str):
    return CliRunner().invoke(main, ["status", *args], env={"AGENTRUNS_API_URL": api_url, "AGENTRUNS_API_KEY": key})


def test_agentruns_status_prints_pools_and_devices(fleet, api_url):
    from workers.device_backoff import DeviceBackoff

    presence.device_connected(fleet.redis, fleet.tenant_id, "g1")
    DeviceBackoff(fleet.redis, 60, sender=None).failed(fleet.tenant_id, "g2")
    try:
        out = _status(api_url, fleet.operator, "--pool", fleet.gpu)
    finally:
        fleet.redis.delete(presence.connected_key(fleet.tenant_id, "g1"), presence.backoff_key(fleet.tenant_id, "g2"))
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["POOL", "QUEUED", "OLDEST", "RUNNING", "DEVICES", "SLOTS", "WORKERS", "FREE", "SLOTS"]
    row = lines[1].split()
    assert row[0] == fleet.gpu and row[1] == "4" and row[2].startswith("2m") and row[3:] == ["1", "2", "3", "0", "0"]
    assert f"! pool {fleet.gpu}: 4 queued, no live worker serves it (agentruns worker --pool {fleet.gpu})" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("TENANT"))
    assert lines[header].split()[:4] == ["TENANT", "DEVICE", "POOL", "QUEUED"]
    devices = {line.split()[1]: line.split() for line in lines[header + 1:] if line.startswith(fleet.tenant)}
    g1, g2 = devices["g1"], devices["g2"]  # TENANT DEVICE POOL QUEUED OLDEST RUNNING MAX LAST-CONNECT FAILURES
    assert g1[2:4] == [fleet.gpu, "3"] and g1[4].startswith("2m") and g1[5:7] == ["0", "2"]
    assert g1[7].rstrip("s").isdigit() and g1[8:] == ["ago", "0"]
    assert g2[2:4] == [fleet.gpu, "1"] and g2[4].endswith("s") and g2[5:10] == ["1", "1", "-", "1", "since"]
    assert g2[10].endswith("s") and g2[11:] == ["ago"]
    limited = _status(api_url, fleet.operator, "--pool", fleet.gpu, "--limit", "1")
    assert "... 1 more devices (--limit 0 shows all)" in limited.output

    raw = _status(api_url, fleet.operator, "--pool", fleet.gpu, "--json")
    assert raw.exit_code == 0 and json.loads(raw.output)["pools"][0]["queued_runs"] == 4

    refused = _status(api_url, fleet.tenant_key)
    assert refused.exit_code == 1
    assert "needs an operator key" in refused.output and "--role operator" in refused.output
    assert "Traceback" not in refused.output


@pytest.mark.unit
def test_ages_read_at_a_glance():
    from agentruns.cli_status import age

    assert [age(s) for s in (None, 0, 59.9, 60, 125, 3599, 3600, 7440, 86400 * 3 + 7200)] == [
        "-", "0s", "59s", "1m00s", "2m05s", "59m59s", "1h00m", "2h04m", "3d02h"]
