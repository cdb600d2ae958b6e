"""The README's SDK examples are code that runs: the Python one here against the live server, the
TypeScript and Go ones are held to the examples their SDKs' own tests run against it
(tests/test_sdk_typescript.py, tests/test_sdk_go.py)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_key

ROOT = Path(__file__).resolve().parent.parent


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def _example(language: str, call: str) -> str:
    found = [block for block in _blocks(ROOT / "README.md", language) if call in block]
    assert len(found) == 1, f"README.md should have one {language} example calling {call}"
    return found[0]


@pytest.mark.unit
def test_the_typescript_example_is_the_one_its_sdk_runs():
    quickstart = (ROOT / "clients/typescript/examples/quickstart.mjs").read_text()
    assert _example("js", "client.agentRuns.run") == quickstart


@pytest.mark.unit
def test_the_go_example_is_the_one_its_sdk_runs():
    # clients/go/readme_test.go holds the Go README's block to the body of ExampleAgentRunsService_Run.
    assert _example("go", "client.AgentRuns.Run") in _blocks(ROOT / "clients/go/README.md", "go")


def test_the_python_example_runs(app, live_server, tmp_path, monkeypatch):  # app: make_key needs the database
    key = make_key()[1]
    made = httpx.post(f"{live_server}/api/v1/devices", headers={"Authorization": f"Bearer {key}"}, json={
        "id": "box-1", "kind": "sandbox", "driver": "local", "default_cwd": str(tmp_path)})
    assert made.status_code == 201, made.text
    monkeypatch.setenv("AGENTRUNS_API_URL", live_server)
    monkeypatch.setenv("AGENTRUNS_API_KEY", key)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_example("python", "client.agent_runs.run"), "README.md", "exec"), {})
    assert printed.getvalue() == "succeeded task: list the files\n\n"  # the output keeps echo's newline


@pytest.mark.unit
def test_the_webhook_receiver_example_accepts_signed_events_and_refuses_the_rest():
    import json
    import time

    from agentruns import webhooks

    secret, handled = webhooks.generate_secret(), []
    namespace = {"__name__": "receiver", "SECRET": secret,
                 "handle": lambda kind, data: handled.append((kind, data["id"]))}
    exec(compile(_example("python", "webhooks.verify"), "README.md", "exec"), namespace)
    client = namespace["app"].test_client()
    body = json.dumps({"id": "evt_1", "type": "run.succeeded", "created_at": "x", "data": {"id": "r1"}}).encode()
    signed = webhooks.sign(body, secret, int(time.time()))
    assert client.post("/agentruns", data=body, headers={"Agentruns-Signature": signed}).status_code == 204
    assert handled == [("run.succeeded", "r1")]
    forged = client.post("/agentruns", data=body.replace(b"r1", b"r2"), headers={"Agentruns-Signature": signed})
    assert (forged.status_code, forged.get_json()) == (400, {"error": "signature_mismatch"})
    old = webhooks.sign(body, secret, int(time.time()) - 3600)
    stale = client.post("/agentruns", data=body, headers={"Agentruns-Signature": old})
    assert (stale.status_code, stale.get_json()) == (400, {"error": "timestamp_outside_tolerance"})
    assert handled == [("run.succeeded", "r1")]
