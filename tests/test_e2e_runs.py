"""End to end: API -> Redis -> real Celery worker process -> real sshd -> stored run."""
from __future__ import annotations

import hashlib
import time
import uuid

import pytest

from tests.conftest import wait_run

pytestmark = pytest.mark.e2e


def create(client, auth, **body):
    body.setdefault("provider", "custom")
    resp = client.post("/api/v1/agent-runs", json=body, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


def wait_status(client, auth, run_id, status, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/agent-runs/{run_id}", headers=auth).get_json()["data"]
        if run["status"] == status and (status != "running" or run["started_at"]):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never became {status}: {run}")


def wait_for_process(sshd, marker: str, seconds: float = 10) -> None:
    """The run is `running` once its shell started; its child may need a moment longer."""
    deadline = time.monotonic() + seconds
    while not sshd.pgrep(marker):
        assert time.monotonic() < deadline, f"no process matching {marker!r} on the device"
        time.sleep(0.05)


def test_custom_command_over_ssh(worker, client, auth, ssh_device):
    run = create(client, auth, prompt="hello device", computer_id="dev-ssh",
                 command='echo "out:$(cat)"; echo warn >&2; pwd; echo "$AGENTRUNS_RUN_ID"', metadata={"t": 1})
    done = wait_run(client, auth, run["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == f"out:hello device\n{ssh_device['workdir']}\n{run['id']}\n"
    assert done["stderr"] == "warn\n" and done["exit_code"] == 0 and done["error"] is None
    assert done["started_at"] and done["finished_at"] >= done["started_at"]
    events = client.get(f"/api/v1/agent-runs/{run['id']}/events", headers=auth).get_json()["data"]
    statuses = [e["data"] for e in events if e["type"] == "status"]
    assert [s["status"] for s in statuses] == ["queued", "running", "succeeded"]
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == done["output"]


def test_local_device_run(worker, client, auth, local_device, tmp_path):
    run = create(client, auth, prompt="p", sandbox_id="box-1", command="pwd; exit 3")
    done = wait_run(client, auth, run["id"])
    assert done["status"] == "failed" and done["exit_code"] == 3
    assert done["error"]["code"] == "nonzero_exit" and done["output"] == f"{tmp_path}\n"


def test_prompt_arrives_byte_exact(worker, client, auth, ssh_device, app, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(app.config, "SETTINGS", replace(app.config["SETTINGS"], max_prompt_chars=300_000))
    tricky = "quotes ' \" `uname` $(id) $HOME ${X} \\ \n newline\ttab ünïcødé 日本語 🚀\n"
    prompt = tricky + "x" * (200 * 1024)
    run = create(client, auth, prompt=prompt, computer_id="dev-ssh",
                 command='sha256sum | cut -d" " -f1; sha256sum < "$AGENTRUNS_PROMPT_FILE" | cut -d" " -f1; '
                         'printf %s "$AGENTRUNS_PROMPT_FILE"',
                 timeout=60)
    done = wait_run(client, auth, run["id"], 60)
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    assert done["status"] == "succeeded", done
    # The prompt file is the run's own copy in its spool on the device (the worker asks the driver).
    assert done["output"].startswith(f"{digest}\n{digest}\n/") and done["output"].endswith(
        f"/.agentruns/spool/{run['id']}.prompt"), done["output"][-200:]


def test_timeout_kills_the_tree(worker, client, auth, ssh_device, sshd):
    marker = f"{3000 + uuid.uuid4().int % 5000}"
    run = create(client, auth, prompt="p", computer_id="dev-ssh", timeout=2,
                 command=f"sleep {marker}1 & sleep {marker}2; wait")
    done = wait_run(client, auth, run["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "timeout", done
    deadline = time.monotonic() + 5
    while sshd.pgrep(f"sleep {marker}"):
        assert time.monotonic() < deadline, f"sleep {marker} survived the timeout"
        time.sleep(0.05)


def test_cancel_running_run(worker, client, auth, ssh_device, sshd):
    marker = f"{3000 + uuid.uuid4().int % 5000}"
    run = create(client, auth, prompt="p", computer_id="dev-ssh", command=f"echo started; sleep {marker}3")
    wait_status(client, auth, run["id"], "running")
    wait_for_process(sshd, f"sleep {marker}3")
    asked = time.monotonic()
    resp = client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)
    assert resp.status_code == 200 and resp.get_json()["data"]["cancel_requested"] is True
    done = wait_run(client, auth, run["id"])
    assert done["status"] == "canceled" and done["error"]["code"] == "canceled"
    assert time.monotonic() - asked < 4
    assert sshd.pgrep(f"sleep {marker}3") == []


def wait_tasks_done(worker, task_ids: list[str], seconds: float = 10) -> list[str]:
    """Wait until the worker logged the end of each task; returns what each returned."""
    deadline = time.monotonic() + seconds
    while True:
        log = worker.log()
        done = [line.rpartition(": ")[2] for tid in task_ids for line in log.splitlines()
                if f"[{tid}] succeeded in" in line]
        if len(done) == len(task_ids):
            return done
        assert time.monotonic() < deadline, f"tasks {task_ids} not all done: {done}"
        time.sleep(0.05)


def test_duplicate_delivery_executes_once(worker, client, auth, ssh_device, sshd, app):
    """Redeliveries of the current message (run, tenant, device) and of an older API's (run id only),
    while the run is queued, running and after it finished, execute it once."""
    from sqlalchemy import text

    from core import db
    from core.messages import EXECUTE, Queued, execute_args

    counter = f"{ssh_device['workdir']}/count-{uuid.uuid4().hex[:6]}"
    run = create(client, auth, prompt="p", computer_id="dev-ssh", command=f"sleep 1; echo x >> {counter}")
    with db.engine().connect() as conn:
        tenant_id = conn.execute(text("SELECT tenant_id FROM runs WHERE id = :id"), {"id": run["id"]}).scalar_one()
    current = execute_args(Queued(uuid.UUID(run["id"]), tenant_id, "dev-ssh"))
    celery = app.extensions["celery"]
    for args in [current, [run["id"]]] * 3:  # while it is queued or running
        celery.send_task(EXECUTE, args=args)
    done = wait_run(client, auth, run["id"])
    late = [celery.send_task(EXECUTE, args=args).id for args in [current, [run["id"]]] * 2]  # after it finished
    outcomes = wait_tasks_done(worker, late)
    assert set(outcomes) <= {"'nothing-queued'", "'busy'"}, outcomes
    assert done["status"] == "succeeded"
    assert sshd.run_as_user(f"cat {counter}").stdout == "x\n"
    assert client.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).get_json()["data"]["status"] == "succeeded"


def test_device_concurrency_of_one_serialises_in_creation_order(worker, client, auth, ssh_device):
    runs = [create(client, auth, prompt=str(i), computer_id="dev-ssh",
                   command="date +%s.%N; sleep 0.4; date +%s.%N") for i in range(4)]
    spans = []
    for run in runs:
        done = wait_run(client, auth, run["id"])
        assert done["status"] == "succeeded"
        start, end = map(float, done["output"].split())
        spans.append((start, end))
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans  # never overlapping, and in creation order


@pytest.mark.parametrize("case, code", [("unreachable", "device_unreachable"), ("wrong_key", "auth_failed"),
                                        ("host_key", "host_key_mismatch"), ("cwd", "cwd_not_found")])
def test_driver_failures_have_error_codes(worker, client, auth, sshd, case, code, request, tmp_path):
    from tests.sshd import free_port, keygen

    body = {"id": f"bad-{case}", "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
            "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key}
    if case == "unreachable":
        body["port"] = free_port()
    elif case == "wrong_key":
        body["private_key"] = keygen(tmp_path / "not-authorized")[0]
    elif case == "host_key":
        moved = sshd.spawn(new_host_key=True)
        request.addfinalizer(moved.stop)
        body["port"] = moved.port  # the device pins the first server's key; this one has another
    elif case == "cwd":
        body["default_cwd"] = "/nonexistent/agentruns"
    assert client.post("/api/v1/devices", json=body, headers=auth).status_code == 201
    run = create(client, auth, prompt="p", computer_id=f"bad-{case}", command="true")
    done = wait_run(client, auth, run["id"], 60)
    assert done["status"] == "failed" and done["error"]["code"] == code, done
    assert done["error"]["message"]


def test_local_runs_do_not_inherit_the_service_secrets(worker, client, auth, local_device):
    run = create(client, auth, prompt="p", sandbox_id="box-1", env={"MINE": "yes"},
                 command='env | cut -d= -f1 | sort; echo "MINE=$MINE"')
    done = wait_run(client, auth, run["id"])
    assert done["status"] == "succeeded"
    names = done["output"].split()
    assert "MINE=yes" in names and "AGENTRUNS_RUN_ID" in names
    assert not {"AGENTRUNS_SECRET_KEY", "DATABASE_URL", "REDIS_URL"} & set(names)


def _device_with_workdir(client, auth, sshd, device_id: str, max_concurrent_runs: int) -> None:
    workdir = f"/tmp/agentruns-e2e-{uuid.uuid4().hex[:8]}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    assert client.post("/api/v1/devices", headers=auth, json={
        "id": device_id, "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
        "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key,
        "default_cwd": workdir, "max_concurrent_runs": max_concurrent_runs}).status_code == 201


def test_a_burst_on_one_device_starts_every_run_without_the_sweeper(worker, client, auth, sshd, app):
    """Claims take the device's oldest run, so deliveries overtake each other; none may be stranded."""
    _device_with_workdir(client, auth, sshd, "burst", 45)
    from concurrent.futures import ThreadPoolExecutor

    # Concurrent creates: commit order and delivery order differ, as they do under real load.
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda i: create(app.test_client(), auth, prompt=str(i), computer_id="burst",
                                              command="sleep 20"), range(45)))
    created = time.monotonic()
    pending = {r["id"] for r in runs}
    # The sweeper would rescue a stranded run after 5 s (queued_stale_seconds in these tests).
    while pending and time.monotonic() - created < 4.5:
        pending = {rid for rid in pending
                   if not client.get(f"/api/v1/agent-runs/{rid}", headers=auth).get_json()["data"]["started_at"]}
        time.sleep(0.2)
    for run in runs:
        client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth)
    assert not pending, f"{len(pending)} of 45 runs were not started within 4.5 s"
    for run in runs:
        assert wait_run(client, auth, run["id"])["status"] == "canceled"


def test_runs_arriving_while_the_only_slot_is_held_all_run_without_the_sweeper(worker, client, auth, sshd, app):
    """A run committed just after the slot holder's last claim finds the device full: the holder must
    look again (the pending mark) before it leaves, or the run waits for the sweeper."""
    _device_with_workdir(client, auth, sshd, "one-slot", 1)
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(3):
        first_created = time.monotonic()
        # Short runs created from several threads: each delivery races the holder's last claim.
        with ThreadPoolExecutor(6) as pool:
            runs = list(pool.map(lambda i: create(app.test_client(), auth, prompt=str(i), computer_id="one-slot",
                                                  command="true"), range(12)))
        pending = {r["id"] for r in runs}
        # The sweeper would rescue a stranded run 5 s after its creation (queued_stale_seconds here).
        while pending and time.monotonic() - first_created < 4.5:
            pending = {rid for rid in pending
                       if client.get(f"/api/v1/agent-runs/{rid}", headers=auth).get_json()["data"]["status"]
                       != "succeeded"}
            time.sleep(0.1)
        assert not pending, f"{len(pending)} of 12 runs did not succeed within 4.5 s"
