"""Live events over Server-Sent Events from the real gunicorn (gevent) API, with Last-Event-ID resume."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import make_key

pytestmark = pytest.mark.e2e


def read_sse(resp) -> list[dict]:
    """Parse frames until the server closes the stream."""
    events: list[dict] = []
    frame: dict[str, str] = {}
    for line in resp.iter_lines():
        if not line:
            if "data" in frame:
                events.append({"id": int(frame["id"]), "event": frame["event"], **json.loads(frame["data"])})
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = value
    return events


@pytest.fixture()
def api(live_server, app, tmp_path):
    key = make_key()[1]
    c = httpx.Client(base_url=live_server, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert c.post("/api/v1/devices", json={"id": "sse-box", "kind": "sandbox", "driver": "local",
                                           "default_cwd": str(tmp_path)}).status_code == 201
    yield c
    c.close()


def test_stream_follows_a_run_live_and_resumes(api):
    run = api.post("/api/v1/agent-runs", json={"prompt": "p", "sandbox_id": "sse-box", "provider": "custom",
                                               "command": "echo one; sleep 0.5; echo two >&2; sleep 0.5; echo three"}
                   ).json()["data"]
    with api.stream("GET", f"/api/v1/agent-runs/{run['id']}/events",
                    headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = read_sse(resp)
    kinds = [(e["event"], e["data"] if e["event"] != "status" else e["data"]["status"]) for e in events]
    assert kinds[0] == ("status", "queued") and kinds[-1] == ("status", "succeeded")
    assert "".join(d for k, d in kinds if k == "stdout") == "one\nthree\n"
    assert "".join(d for k, d in kinds if k == "stderr") == "two\n"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # Resume after the second event: exactly the rest comes back.
    with api.stream("GET", f"/api/v1/agent-runs/{run['id']}/events",
                    headers={"Accept": "text/event-stream", "Last-Event-ID": str(events[1]["id"])}) as resp:
        rest = read_sse(resp)
    assert [e["id"] for e in rest] == [e["id"] for e in events[2:]]
    listed = api.get(f"/api/v1/agent-runs/{run['id']}/events?after_seq={events[1]['id']}").json()["data"]
    assert [e["seq"] for e in listed] == [e["id"] for e in events[2:]]


def test_stream_of_unknown_run_is_404_json(api):
    resp = api.get("/api/v1/agent-runs/00000000-0000-0000-0000-000000000000/events",
                   headers={"Accept": "text/event-stream"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
