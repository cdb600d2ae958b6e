"""`client.webhooks` and `agent_runs.create(webhook_url=...)` of the Python SDK.

The retry policy is checked on the I/O-free flows (no server); everything else runs against the live API,
worker and beat, twice: on the sync `Client` and on the `AsyncClient` (tests.test_sdk_core.open_twin).
Deliveries come from real runs and reach a real HTTP receiver on loopback (tests.webhook_receiver).
"""
from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from contextlib import ExitStack

import httpx
import pytest

from agentruns import webhooks as signing
from agentruns._sdk_resources import WebhookFlows, run_body, webhook_body
from agentruns.client import Client, ConnectionFailed, NotFound, ServerError, ValidationFailed
from agentruns.client_async import AsyncClient
from tests.test_client_sdk import new_tenant
from tests.test_sdk_core import CFG, drive, error, ok, open_twin, reply, script
from tests.webhook_receiver import Receiver

HOOK = {"id": "h-1", "url": "https://example.com/h", "secret": "whsec_x"}
DELIVERY = {"id": "d-2", "event_id": "evt_1", "state": "pending"}


# --- the flows, with no server --------------------------------------------------------------------------
@pytest.mark.unit
def test_reads_are_resent_after_any_transient_failure():
    flows = WebhookFlows(CFG)
    trace = drive(flows.get("h-1"), script(httpx.ReadError("reset"), error(503, "unavailable"), ok(HOOK)))
    assert trace.result == HOOK and len(trace.calls) == 3 and trace.calls[0].retry == "always"
    trace = drive(flows.list(), script(error(502, "bad_gateway"), ok([HOOK])))
    assert trace.result == [HOOK] and len(trace.calls) == 2


@pytest.mark.unit
@pytest.mark.parametrize("make", [
    lambda f: f.create(webhook_body(url="https://example.com/h")),
    lambda f: f.rotate_secret("h-1"),
    lambda f: f.redeliver("h-1", "d-1"),
    lambda f: f.update("h-1", {"enabled": True}),
    lambda f: f.delete("h-1"),
], ids=["create", "rotate_secret", "redeliver", "update", "delete"])
def test_writes_are_resent_only_when_they_surely_never_arrived(make):
    flows = WebhookFlows(CFG)
    # Never left (connection refused) or refused before any work (429): sent again, as the same call.
    trace = drive(make(flows), script(httpx.ConnectError("refused"), error(429, "rate_limited"), ok(HOOK)))
    assert trace.result == HOOK and len(trace.calls) == 3 and len({id(c) for c in trace.calls}) == 1
    # May have arrived: a second rotation would replace the secret the first showed, a second create
    # would subscribe twice, a second redeliver would send the event once more. Not resent.
    with pytest.raises(ConnectionFailed):
        drive(make(flows), script(httpx.ReadError("reset"), ok(HOOK)))
    with pytest.raises(ServerError):
        drive(make(flows), script(error(503, "unavailable"), ok(HOOK)))


@pytest.mark.unit
def test_deliveries_follow_next_cursor_with_the_filters_on_every_page():
    flows = WebhookFlows(CFG)
    pages = script(reply(200, {"data": [{"id": "d-3"}, {"id": "d-2"}], "next_cursor": "c1"}),
                   error(503, "unavailable"),  # a read: resent
                   reply(200, {"data": [{"id": "d-1"}], "next_cursor": None}))
    trace = drive(flows.deliveries("h-1", 2, {"state": "delivered", "run_id": None, "cursor": "c0"}), pages)
    assert [d["id"] for d in trace.emitted] == ["d-3", "d-2", "d-1"]
    assert [c.params for c in trace.calls] == [{"state": "delivered", "cursor": "c0", "limit": 2},
                                               *[{"state": "delivered", "cursor": "c1", "limit": 2}] * 2]
    assert trace.calls[0].path == "/api/v1/webhooks/h-1/deliveries"


@pytest.mark.unit
def test_paths_bodies_and_the_run_bodys_webhook_url():
    flows = WebhookFlows(CFG)
    calls = [drive(make, script(ok(HOOK))).calls[0] for make in (
        flows.get("per-run"), flows.get("../devices"), flows.rotate_secret("per-run"),
        flows.redeliver("h 1", "d/1"))]
    assert [(c.method, c.path) for c in calls] == [
        ("GET", "/api/v1/webhooks/per-run"), ("GET", "/api/v1/webhooks/..%2Fdevices"),
        ("POST", "/api/v1/webhooks/per-run/rotate-secret"),
        ("POST", "/api/v1/webhooks/h%201/deliveries/d%2F1/redeliver")]
    assert webhook_body(url="https://x", events=("run.failed",)) == {"url": "https://x", "events": ["run.failed"]}
    assert webhook_body(url="https://x", enabled=False, description=None) == {"url": "https://x", "enabled": False}
    assert run_body(prompt="p", webhook_url="https://x/h") == {"prompt": "p", "webhook_url": "https://x/h"}
    assert "webhook_url" not in run_body(prompt="p")
    # PATCH sends what it is given: None clears a description.
    patch = drive(flows.update("h-1", {"description": None}), script(ok(HOOK))).calls[0]
    assert (patch.method, patch.json) == ("PATCH", {"description": None})


@pytest.mark.unit
def test_both_shells_have_the_same_webhooks_methods():
    sync, asyn = Client("http://x", "k"), AsyncClient("http://x", "k")
    names = {"create", "list", "get", "update", "delete", "rotate_secret", "deliveries_page", "deliveries",
             "redeliver"}
    for name in names:
        one, other = getattr(sync.webhooks, name), getattr(asyn.webhooks, name)
        assert inspect.signature(one).parameters == inspect.signature(other).parameters, name
    assert {n for n in dir(sync.webhooks) if not n.startswith("_")} == names
    assert "webhook_url" in inspect.signature(asyn.agent_runs.run).parameters
    sync.close()
    asyncio.run(asyn.aclose())


# --- against the live server ----------------------------------------------------------------------------
@pytest.fixture()
def tenant(app, live_server, tmp_path):
    return new_tenant(live_server, tmp_path)


@pytest.fixture(params=["sync", "async"])
def client(request, tenant):
    with ExitStack() as stack:
        yield stack.enter_context(open_twin(request.param, tenant.url, tenant.key, backoff_base=0.05))


@pytest.fixture()
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def verified(received, secret: str) -> list[dict]:
    """The events' bodies, each checked against its Agentruns-Signature with `secret`."""
    return [signing.verify(r.body, r.headers[signing.SIGNATURE_HEADER], secret) for r in received]


def all_delivered(client, webhook_id: str, count: int, seconds: float = 15, **filters) -> list[dict]:
    """The endpoint's deliveries once `count` of them are delivered (the receiver answers before the
    dispatcher records it)."""
    deadline = time.monotonic() + seconds
    while True:
        rows = list(client.webhooks.deliveries(webhook_id, **filters))
        if sum(d["state"] == "delivered" for d in rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.mark.e2e
def test_create_shows_the_secret_once_and_the_endpoint_can_be_managed(client):
    first = client.webhooks.create("http://127.0.0.1:9/first")
    assert first["secret"].startswith("whsec_") and first["events"] == ["run.*"] and first["enabled"] is True
    assert first["filters"] == {"target_id": None, "provider": None, "metadata": {}} and first["per_run"] is False
    second = client.webhooks.create("http://127.0.0.1:9/second", events=["run.succeeded", "run.failed"],
                                    filters={"target_id": "box", "provider": "custom", "metadata": {"team": "a"}},
                                    description="ci", enabled=False)
    assert second["events"] == ["run.failed", "run.succeeded"] and second["enabled"] is False
    assert second["filters"] == {"target_id": "box", "provider": "custom", "metadata": {"team": "a"}}
    listed = client.webhooks.list()
    assert [h["id"] for h in listed] == [first["id"], second["id"]]
    assert all("secret" not in h for h in listed)
    shown = client.webhooks.get(second["id"])
    assert "secret" not in shown and shown == {k: v for k, v in second.items() if k != "secret"}

    updated = client.webhooks.update(second["id"], enabled=True, description=None, filters={"provider": "codex"})
    assert updated["enabled"] is True and updated["description"] is None
    assert updated["filters"] == {"target_id": None, "provider": "codex", "metadata": {}}  # replaced whole
    with pytest.raises(ValidationFailed) as refused:
        client.webhooks.update(second["id"], url="not a url")
    assert "url" in refused.value.details["fields"]
    with pytest.raises(ValidationFailed) as refused:
        client.webhooks.create("ftp://example.com/x")
    assert "url" in refused.value.details["fields"]

    rotated = client.webhooks.rotate_secret(first["id"])
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != first["secret"]
    assert rotated["previous_secret_expires_at"] and "secret" not in client.webhooks.get(first["id"])
    per_run = client.webhooks.rotate_secret("per-run")  # created on first use
    assert (per_run["id"], per_run["per_run"], per_run["url"]) == ("per-run", True, None)
    assert client.webhooks.get("per-run")["id"] == "per-run"
    assert per_run["id"] not in [h["id"] for h in client.webhooks.list()]

    assert client.webhooks.delete(second["id"]) is None
    missing = str(uuid.uuid4())
    for call in (lambda: client.webhooks.get(second["id"]), lambda: client.webhooks.delete(second["id"]),
                 lambda: client.webhooks.update(missing, enabled=False),
                 lambda: client.webhooks.rotate_secret(missing), lambda: client.webhooks.get("nope"),
                 lambda: list(client.webhooks.deliveries(missing)),
                 lambda: client.webhooks.redeliver(first["id"], missing)):
        with pytest.raises(NotFound):
            call()
    assert [h["id"] for h in client.webhooks.list()] == [first["id"]]


@pytest.mark.e2e
def test_a_runs_events_are_delivered_paged_and_redelivered(client, receiver):
    hook = client.webhooks.create(receiver.url("/sdk"))
    per_run = client.webhooks.rotate_secret("per-run")
    run = client.agent_runs.run(prompt="p", sandbox_id="box", provider="custom", command="echo hi",
                                webhook_url=receiver.url("/own"), wait_timeout=20)
    assert run["status"] == "succeeded" and run["webhook_url"] == receiver.url("/own")
    events = verified(receiver.wait_for("/sdk", 3), hook["secret"])
    assert [e["type"] for e in events] == ["run.queued", "run.started", "run.succeeded"]
    assert {e["data"]["id"] for e in events} == {run["id"]} and events[-1]["data"] == run
    own = verified(receiver.wait_for("/own", 3), per_run["secret"])  # signed with the per-run secret
    assert [e["type"] for e in own] == ["run.queued", "run.started", "run.succeeded"]

    rows = all_delivered(client, hook["id"], 3, limit=2)  # two pages
    # Newest first: by created_at, then id (events written in one transaction share a created_at).
    assert [(d["created_at"], d["id"]) for d in rows] == sorted(((d["created_at"], d["id"]) for d in rows),
                                                                reverse=True)
    assert rows[-1]["event_type"] == "run.queued"
    assert {d["event_type"]: d["event_id"] for d in rows} == {e["type"]: e["id"] for e in events}
    assert all(d["state"] == "delivered" and d["attempts"] == 1 and d["last_status_code"] == 200
               and d["run_id"] == run["id"] and d["url"] == receiver.url("/sdk") for d in rows)
    assert rows[0]["attempt_log"][0]["status_code"] == 200
    first = client.webhooks.deliveries_page(hook["id"], limit=2)
    assert first["data"] == rows[:2] and first["next_cursor"]
    rest = client.webhooks.deliveries_page(hook["id"], limit=2, cursor=first["next_cursor"])
    assert rest == {"data": rows[2:], "next_cursor": None}
    assert list(client.webhooks.deliveries(hook["id"], limit=1, cursor=first["next_cursor"])) == rows[2:]
    assert list(client.webhooks.deliveries(hook["id"], state="failed")) == []
    assert len(list(client.webhooks.deliveries(hook["id"], run_id=run["id"], state="delivered"))) == 3
    assert list(client.webhooks.deliveries(hook["id"], event_id=rows[1]["event_id"])) == [rows[1]]
    assert [d["url"] for d in all_delivered(client, "per-run", 3, run_id=run["id"])] == [receiver.url("/own")] * 3

    again = client.webhooks.redeliver(hook["id"], rows[0]["id"])
    assert again["id"] != rows[0]["id"] and again["event_id"] == rows[0]["event_id"]
    assert (again["state"], again["attempts"], again["event_type"]) == ("pending", 0, rows[0]["event_type"])
    resent = receiver.wait_for("/sdk", 4)[3]
    assert resent.headers[signing.EVENT_ID_HEADER] == rows[0]["event_id"]
    original = next(e for e in events if e["id"] == rows[0]["event_id"])
    assert verified([resent], hook["secret"])[0] == original  # the same event, signed afresh
    both = all_delivered(client, hook["id"], 2, event_id=rows[0]["event_id"])
    assert [d["id"] for d in both] == [again["id"], rows[0]["id"]]


@pytest.mark.e2e
def test_async_client_with_await_and_async_for(tenant, receiver):
    async def main():
        async with AsyncClient(tenant.url, tenant.key) as client:
            hook = await client.webhooks.create(receiver.url("/async"), events=["run.failed"])
            assert hook["secret"].startswith("whsec_")
            assert [h["id"] for h in await client.webhooks.list()] == [hook["id"]]
            run = await client.agent_runs.run(prompt="p", sandbox_id="box", provider="custom", command="exit 3")
            assert run["status"] == "failed"
            (event,) = verified(await asyncio.to_thread(receiver.wait_for, "/async", 1), hook["secret"])
            assert event["type"] == "run.failed" and event["data"]["exit_code"] == 3
            rows = [d async for d in client.webhooks.deliveries(hook["id"], limit=1)]
            assert [d["event_id"] for d in rows] == [event["id"]]
            again = await client.webhooks.redeliver(hook["id"], rows[0]["id"])
            assert again["event_id"] == event["id"]
            rotated = await client.webhooks.rotate_secret(hook["id"])
            assert rotated["secret"] != hook["secret"]
            await client.webhooks.delete(hook["id"])
            with pytest.raises(NotFound):
                await client.webhooks.get(hook["id"])

    asyncio.run(main())
