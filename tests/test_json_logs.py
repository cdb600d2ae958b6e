"""Structured JSON logs (issue 15): the bound fields (core.log_context), the JSON lines, the API's
request fields, and `agentruns api` and `agentruns worker` writing nothing but JSON lines in which one
run's id can be found in both processes."""
from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core import log_context
from core.log_context import FIELDS, bind

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own whose records are written as JSON lines to a StringIO (the root logger untouched)."""
    out = io.StringIO()
    logger = logging.getLogger(f"agentruns.test_json_logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = log_context.json_handler(out)
    logger.addHandler(handler)
    yield logger, out
    logger.removeHandler(handler)


def parsed(out: io.StringIO) -> list[dict]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.unit
def test_a_line_has_the_fixed_keys_and_only_the_fields_that_are_set(lines):
    logger, out = lines
    run_id = uuid.uuid4()
    with bind(run_id=run_id, tenant_id="t1", pool=None):
        logger.warning("run %s: %s", run_id, "two\nlines")
    logger.info("unbound")
    first, second = parsed(out)
    assert list(first) == ["ts", "level", "logger", "message", "pid", "run_id", "tenant_id"]
    assert first["run_id"] == str(run_id) and first["tenant_id"] == "t1"  # a UUID is written as its string
    assert first["level"] == "WARNING" and first["logger"] == logger.name
    assert first["message"] == f"run {run_id}: two\nlines"  # one record, one line, whatever its message
    assert first["ts"].endswith("Z") and first["ts"][10] == "T" and len(first["ts"]) == 24  # RFC 3339, UTC, ms
    assert not set(FIELDS) & set(second)


@pytest.mark.unit
def test_nested_binds_add_override_and_restore():
    assert log_context.current() == {}
    with bind(run_id="r1", tenant_id="t1") as fields:
        assert fields == {"run_id": "r1", "tenant_id": "t1"}
        with bind(run_id="r2", device_id="d1"):
            assert log_context.current() == {"run_id": "r2", "tenant_id": "t1", "device_id": "d1"}
            with bind(device_id=None):  # None leaves a field as it is
                assert log_context.current()["device_id"] == "d1"
        assert log_context.current() == {"run_id": "r1", "tenant_id": "t1"}
    assert log_context.current() == {}


@pytest.mark.unit
def test_a_bind_is_undone_when_its_block_raises():
    with pytest.raises(RuntimeError), bind(run_id="r1"):
        raise RuntimeError("boom")
    assert log_context.current() == {}


@pytest.mark.unit
def test_push_and_reset_for_hooks_that_cannot_use_with():
    token = log_context.push(request_id="q1")
    log_context.push(tenant_id="t1")  # undone by resetting the first token
    assert log_context.current() == {"request_id": "q1", "tenant_id": "t1"}
    log_context.reset(token)
    assert log_context.current() == {}


@pytest.mark.unit
def test_an_unknown_field_name_is_refused():
    with pytest.raises(TypeError, match="run_idd"):
        bind(run_idd="r1")
    with pytest.raises(TypeError):
        log_context.set_process_fields(host="h")


@pytest.mark.unit
def test_an_exception_is_one_string_field(lines):
    logger, out = lines
    try:
        raise ValueError("the cause")
    except ValueError:
        logger.exception("it failed")
    (line,) = parsed(out)
    assert line["level"] == "ERROR" and line["message"] == "it failed"
    assert line["exc_info"].startswith("Traceback") and "ValueError: the cause" in line["exc_info"]


@pytest.mark.unit
def test_extra_fields_of_the_known_set_are_written_and_win_over_bound_ones(lines):
    logger, out = lines
    with bind(run_id="bound", tenant_id="t1"):
        logger.info("about another run", extra={"run_id": "explicit", "color": "red"})
    (line,) = parsed(out)
    assert line["run_id"] == "explicit" and line["tenant_id"] == "t1"
    assert "color" not in line  # not one of FIELDS


@pytest.mark.unit
def test_a_bad_format_string_still_makes_a_line():
    # Formatted directly: pytest's own capture handler would fail the test on the bad format first.
    record = logging.LogRecord("agentruns.x", logging.INFO, __file__, 1, "%d runs", ("many",), None)
    line = json.loads(log_context.JsonFormatter().format(record))
    assert "%d runs" in line["message"] and "many" in line["message"]


@pytest.mark.unit
def test_threads_start_empty_unless_carried_and_process_fields_reach_every_thread(lines):
    logger, out = lines
    log_context.set_process_fields(worker="w@host")
    try:
        with bind(run_id="r1"):
            for target in (lambda: logger.info("plain"), log_context.carry(lambda: logger.info("carried"))):
                thread = threading.Thread(target=target)
                thread.start()
                thread.join()
    finally:
        log_context.set_process_fields(worker=None)
    plain, carried = parsed(out)
    assert plain["worker"] == "w@host" and "run_id" not in plain  # contextvars do not flow into a new thread
    assert carried["worker"] == "w@host" and carried["run_id"] == "r1"
    assert log_context.current() == {}


@pytest.mark.unit
def test_the_filter_on_a_handler_sees_records_propagated_from_child_loggers():
    out = io.StringIO()
    parent = logging.getLogger(f"agentruns.test_json_parent_{uuid.uuid4().hex}")
    parent.propagate = False
    handler = log_context.json_handler(out)
    parent.addHandler(handler)
    try:
        with bind(request_id="q1"):
            logging.getLogger(f"{parent.name}.child").warning("from a child")
    finally:
        parent.removeHandler(handler)
    (line,) = parsed(out)
    assert line["request_id"] == "q1" and line["logger"].endswith(".child")


# --- the API's request fields, in process -----------------------------------------------------------

def test_the_api_logs_a_created_run_with_its_request_and_tenant_and_unbinds_after(client, auth, local_device):
    out = io.StringIO()
    api_log = logging.getLogger("agentruns.api")
    handler = log_context.json_handler(out)
    api_log.addHandler(handler)
    try:
        resp = client.post("/api/v1/agent-runs", headers={**auth, "X-Request-Id": "jl-req-1"},
                           json={"provider": "custom", "command": "true", "prompt": "p", "sandbox_id": "box-1"})
    finally:
        api_log.removeHandler(handler)
    assert resp.status_code == 201, resp.get_json()
    run = resp.get_json()["data"]
    created = [line for line in parsed(out) if line.get("run_id") == run["id"]]
    assert len(created) == 1, out.getvalue()
    assert created[0]["request_id"] == "jl-req-1" and created[0]["device_id"] == "box-1"
    assert created[0]["tenant_id"] == str(_tenant_of(run["id"]))
    assert log_context.current() == {}  # nothing of the request stays bound on this thread


def _tenant_of(run_id: str) -> uuid.UUID:
    from core import db, runstate

    with db.transaction() as conn:
        query = select(runstate.runs.c.tenant_id).where(runstate.runs.c.id == uuid.UUID(run_id))
        return conn.execute(query).scalar_one()


# --- the real processes -----------------------------------------------------------------------------

def _json_lines(name: str, text: str) -> list[dict]:
    """Every line of a process's output as JSON (failing on the first one that is not)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            out.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{name} log line {number} is not JSON: {line!r}\n--- whole log ---\n{text}")
        assert {"ts", "level", "logger", "message"} <= set(out[-1]), line
    return out


@pytest.mark.e2e
def test_api_and_worker_write_json_lines_that_name_the_run(e2e_env, app, tmp_path):
    from tests.conftest import make_key
    from tests.sshd import free_port
    from tests.stack import start_api, start_worker

    pool, request_id = f"jl{uuid.uuid4().hex[:8]}", f"jl-{uuid.uuid4().hex}"
    port = free_port()
    # The worker is told by its option, the API by the environment variable: both ways are covered.
    worker = start_worker(e2e_env, concurrency=4, name="jl-worker",
                          options=("--pool", pool, "--no-webhooks", "--log-format", "json"))
    try:
        api = start_api({**e2e_env, "AGENTRUNS_LOG_FORMAT": "json"}, port, name="jl-api")
    except BaseException:
        worker.stop()
        raise
    try:
        headers = {"Authorization": f"Bearer {make_key()[1]}"}
        base = f"http://127.0.0.1:{port}/api/v1"
        with httpx.Client(base_url=base, headers=headers, timeout=40) as http:
            http.post("/devices", json={"id": "jl-box", "kind": "sandbox", "driver": "local", "pool": pool,
                                        "default_cwd": str(tmp_path)}).raise_for_status()
            body = {"provider": "custom", "command": "echo ok", "prompt": "p", "sandbox_id": "jl-box"}
            created = http.post("/agent-runs", headers={"X-Request-Id": request_id}, json=body)
            assert created.status_code == 201, created.text
            run_id = created.json()["data"]["id"]
            done = http.get(f"/agent-runs/{run_id}", params={"wait": 30}).json()["data"]
            assert done["status"] == "succeeded", done
    finally:
        api.stop()
        worker.stop()

    tenant_id = str(_tenant_of(run_id))
    api_lines, worker_lines = _json_lines("api", api.log()), _json_lines("worker", worker.log())
    # The API: gunicorn's own lines, and the created run with its request and tenant.
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in api_lines)
    made = [line for line in api_lines if line.get("run_id") == run_id]
    assert made and made[0]["request_id"] == request_id and made[0]["tenant_id"] == tenant_id, made
    assert made[0]["device_id"] == "jl-box"
    # The worker: Celery's own lines and ours, every one with the worker's node name.
    assert any(line["logger"].startswith("celery.") and "ready." in line["message"] for line in worker_lines)
    assert all(line.get("worker", "").startswith("jl-worker@") for line in worker_lines), worker_lines[:3]
    about_run = [line for line in worker_lines if run_id in line["message"] or line.get("run_id") == run_id]
    assert any(line["logger"].startswith("agentruns.") for line in about_run), worker_lines
    # The worker binds a run's fields around its execution: those lines carry them as fields.
    bound = [line for line in worker_lines if line.get("run_id") == run_id]
    assert bound, worker_lines
    assert all(line.get("tenant_id") == tenant_id and line.get("device_id") == "jl-box"
               and line.get("pool") == pool for line in bound), bound


@pytest.mark.e2e
def test_beat_writes_json_lines(e2e_env):
    from tests.stack import AGENTRUNS, ServiceProcess

    beat = ServiceProcess([AGENTRUNS, "beat", "--log-format", "json"], e2e_env, "jl-beat")
    try:
        beat.wait_for("Sending due task", timeout=30)  # Celery's own beat lines, the banner left out
    finally:
        beat.stop()
    lines = _json_lines("beat", beat.log())
    assert any(line["logger"] == "celery.beat" and line["message"] == "beat: Starting..." for line in lines)
