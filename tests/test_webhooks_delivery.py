"""Webhook delivery end to end: real worker and beat processes, a real HTTP receiver on loopback.

Runs change status in the worker; the outbox trigger writes their events in the same transactions;
beat's listener kicks the dispatcher, which signs and POSTs them. Receivers check what arrives with
the SDK's verify().
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from agentruns import webhooks
from tests.conftest import wait_run
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture()
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def subscribe(client, auth, url, **body) -> dict:
    resp = client.post("/api/v1/webhooks", json={"url": url, **body}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


def run(client, auth, device, command="echo hi", **body) -> dict:
    resp = client.post("/api/v1/agent-runs", json={"target_id": device["id"], "provider": "custom",
                                                   "command": command, "prompt": "p", **body}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["data"]


def events(received, secret) -> list[dict]:
    """The bodies, each verified against its signature with `secret`."""
    return [webhooks.verify(r.body, r.headers[webhooks.SIGNATURE_HEADER], secret) for r in received]


def deliveries(client, auth, endpoint_id, **query) -> list[dict]:
    resp = client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", query_string=query, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["data"]


def test_each_event_arrives_once_signed_with_the_runs_fields(worker, client, auth, local_device, receiver):
    everything = subscribe(client, auth, receiver.url("/all"))
    succeeded_only = subscribe(client, auth, receiver.url("/ends"), events=["run.succeeded", "run.failed"])
    ok = run(client, auth, local_device, "echo hi")
    bad = run(client, auth, local_device, "echo no >&2; exit 3")
    ok, bad = wait_run(client, auth, ok["id"]), wait_run(client, auth, bad["id"])
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")

    got = events(receiver.wait_for("/all", 6), everything["secret"])
    by_run = {rid: [e["type"] for e in got if e["data"]["id"] == rid] for rid in (ok["id"], bad["id"])}
    assert by_run == {ok["id"]: ["run.queued", "run.started", "run.succeeded"],
                      bad["id"]: ["run.queued", "run.started", "run.failed"]}
    final = {e["data"]["id"]: e["data"] for e in got if e["type"] in ("run.succeeded", "run.failed")}
    for stored in (ok, bad):
        assert final[stored["id"]] == stored  # the API's run shape, with the final fields
    assert final[bad["id"]]["exit_code"] == 3 and final[ok["id"]]["stdout"] == "hi\n"
    assert len({e["id"] for e in got}) == 6 and all(e["id"].startswith("evt_") for e in got)
    ends = events(receiver.wait_for("/ends", 2), succeeded_only["secret"])
    assert sorted(e["type"] for e in ends) == ["run.failed", "run.succeeded"]
    time.sleep(1.0)  # nothing more comes: once per event and endpoint
    assert len(receiver.at("/all")) == 6 and len(receiver.at("/ends")) == 2
    first = receiver.at("/all")[0]
    assert first.headers[webhooks.EVENT_ID_HEADER] == json.loads(first.body)["id"]
    assert first.headers["User-Agent"].startswith("agentruns-webhooks")
    assert first.headers["Content-Type"] == "application/json"


def test_a_failing_receiver_gets_the_same_event_until_it_answers(worker, client, auth, local_device, receiver):
    hook = subscribe(client, auth, receiver.url("/flaky"), events=["run.succeeded"])
    receiver.script["/flaky"] = [500, 503]
    done = wait_run(client, auth, run(client, auth, local_device)["id"])
    got = receiver.wait_for("/flaky", 3)
    assert len({r.headers[webhooks.EVENT_ID_HEADER] for r in got}) == 1  # one event, three attempts
    assert [e["type"] for e in events(got, hook["secret"])] == ["run.succeeded"] * 3
    deadline = time.monotonic() + 10  # the receiver saw the request before the dispatcher recorded it
    while (delivery := deliveries(client, auth, hook["id"], run_id=done["id"])[0])["state"] != "delivered":
        assert time.monotonic() < deadline, delivery
        time.sleep(0.1)
    assert (delivery["state"], delivery["attempts"], delivery["last_status_code"]) == ("delivered", 3, 200)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]
    assert delivery["event_id"] == got[0].headers[webhooks.EVENT_ID_HEADER]
    assert delivery["next_attempt_at"] is None and delivery["delivered_at"] is not None
    time.sleep(1.0)
    assert len(receiver.at("/flaky")) == 3


def test_final_answers_are_not_retried_and_redeliver_sends_again(worker, client, auth, local_device, receiver):
    hook = subscribe(client, auth, receiver.url("/gone"), events=["run.succeeded"])
    receiver.script["/gone"] = [(302, {"Location": "http://127.0.0.1:1/elsewhere"}), 400]
    first, second = (wait_run(client, auth, run(client, auth, local_device)["id"]) for _ in range(2))
    receiver.wait_for("/gone", 2)
    time.sleep(1.5)  # a retry would have come by now (base 0.3 s)
    assert len(receiver.at("/gone")) == 2
    log = {d["run_id"]: d for d in deliveries(client, auth, hook["id"])}
    assert {log[first["id"]]["last_status_code"], log[second["id"]]["last_status_code"]} == {302, 400}
    assert all(d["state"] == "failed" and d["attempts"] == 1 for d in log.values())

    resp = client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{log[first['id']]['id']}/redeliver", headers=auth)
    assert resp.status_code == 202, resp.get_json()
    again = resp.get_json()["data"]
    assert again["event_id"] == log[first["id"]]["event_id"] and again["id"] != log[first["id"]]["id"]
    got = receiver.wait_for("/gone", 3)
    assert got[2].headers[webhooks.EVENT_ID_HEADER] == again["event_id"]


def test_receiver_down_then_back_gets_everything_in_order(worker, client, auth, local_device, receiver):
    hook = subscribe(client, auth, receiver.url("/down"))
    receiver.stop()
    runs = [run(client, auth, local_device, f"echo {i}") for i in range(4)]
    for r in runs:
        wait_run(client, auth, r["id"])
    time.sleep(1.0)  # a few refused attempts
    assert any(d["attempts"] >= 1 and d["state"] == "pending" for d in deliveries(client, auth, hook["id"]))
    receiver.start()  # the same port again
    got = events(receiver.wait_for("/down", 12, timeout=60), hook["secret"])
    for r in runs:
        assert [e["type"] for e in got if e["data"]["id"] == r["id"]] == ["run.queued", "run.started",
                                                                          "run.succeeded"]
    assert len({e["id"] for e in got}) == 12


def test_rotation_signs_with_both_secrets(worker, client, auth, local_device, receiver):
    hook = subscribe(client, auth, receiver.url("/rotated"), events=["run.succeeded"])
    rotated = client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret", headers=auth).get_json()["data"]
    wait_run(client, auth, run(client, auth, local_device)["id"])
    (got,) = receiver.wait_for("/rotated", 1)
    header = got.headers[webhooks.SIGNATURE_HEADER]
    assert header.count("v1=") == 2
    assert webhooks.verify(got.body, header, rotated["secret"])["type"] == "run.succeeded"
    assert webhooks.verify(got.body, header, hook["secret"])["type"] == "run.succeeded"
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(got.body, header, webhooks.generate_secret())


def test_per_run_url_and_filters(worker, client, auth, local_device, receiver):
    secret = client.post("/api/v1/webhooks/per-run/rotate-secret", headers=auth).get_json()["data"]["secret"]
    infra = subscribe(client, auth, receiver.url("/infra"), filters={"metadata": {"team": "infra"}})
    mine = run(client, auth, local_device, metadata={"team": "web"}, webhook_url=receiver.url("/job-1"))
    theirs = run(client, auth, local_device, metadata={"team": "infra"})
    wait_run(client, auth, mine["id"]), wait_run(client, auth, theirs["id"])
    own = events(receiver.wait_for("/job-1", 3), secret)
    assert [e["type"] for e in own] == ["run.queued", "run.started", "run.succeeded"]
    assert {e["data"]["id"] for e in own} == {mine["id"]} and own[-1]["data"]["webhook_url"] == receiver.url("/job-1")
    filtered = events(receiver.wait_for("/infra", 3), infra["secret"])
    assert {e["data"]["id"] for e in filtered} == {theirs["id"]}
    per_run_log = deliveries(client, auth, "per-run", run_id=mine["id"])
    assert {d["event_type"] for d in per_run_log} == {"run.queued", "run.started", "run.succeeded"}
    assert all(d["url"] == receiver.url("/job-1") for d in per_run_log)


def test_a_canceled_queued_run_sends_run_canceled(quiet_client, auth, local_device, worker, receiver):
    hook = subscribe(quiet_client, auth, receiver.url("/canceled"), events=["run.canceled"])
    queued = run(quiet_client, auth, local_device)  # nobody consumes the quiet app's queue
    assert quiet_client.post(f"/api/v1/agent-runs/{queued['id']}/cancel", headers=auth).status_code == 200
    (event,) = events(receiver.wait_for("/canceled", 1), hook["secret"])
    assert (event["type"], event["data"]["status"], event["data"]["error"]["code"]) == (
        "run.canceled", "canceled", "canceled")


def test_an_endpoint_failing_for_days_is_disabled(worker, client, auth, local_device, receiver):
    from sqlalchemy import text

    from core import db

    hook = subscribe(client, auth, receiver.url("/dead"), events=["run.succeeded"])
    with db.transaction() as conn:  # as if it had been failing since four days ago (the limit is three)
        conn.execute(text("UPDATE webhook_endpoints SET failing_since = now() - interval '4 days' WHERE id = :id"),
                     {"id": uuid.UUID(hook["id"])})
    receiver.script["/dead"] = [410]
    wait_run(client, auth, run(client, auth, local_device)["id"])
    receiver.wait_for("/dead", 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = client.get(f"/api/v1/webhooks/{hook['id']}", headers=auth).get_json()["data"]
        if not shown["enabled"]:
            break
        time.sleep(0.1)
    assert shown["enabled"] is False and "HTTP 410" in shown["disabled_reason"], shown
    assert shown["disabled_reason"].startswith("failing since ")
    wait_run(client, auth, run(client, auth, local_device)["id"])  # no delivery for a disabled endpoint
    time.sleep(1.0)
    assert len(receiver.at("/dead")) == 1
    enabled = client.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=auth).get_json()["data"]
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["failing_since"]) == (True, None, None)


def test_disabling_an_endpoint_ends_its_pending_deliveries(worker, client, auth, local_device, receiver):
    hook = subscribe(client, auth, receiver.url("/off"), events=["run.succeeded"])
    receiver.stop()  # refused: the delivery stays pending, retried
    wait_run(client, auth, run(client, auth, local_device)["id"])
    deadline = time.monotonic() + 10
    while not (pending := deliveries(client, auth, hook["id"], state="pending")) or pending[0]["attempts"] < 1:
        assert time.monotonic() < deadline, "no attempt was made"
        time.sleep(0.1)
    url = f"/api/v1/webhooks/{hook['id']}/deliveries/{pending[0]['id']}/redeliver"
    busy = client.post(url, headers=auth)
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "delivery_pending"

    assert client.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": False}, headers=auth).status_code == 200
    (ended,) = deliveries(client, auth, hook["id"])
    assert (ended["state"], ended["last_error"], ended["next_attempt_at"]) == ("failed", "endpoint disabled", None)
    off = client.post(url, headers=auth)
    assert off.status_code == 409 and off.get_json()["error"]["code"] == "webhook_disabled"

    receiver.start()
    client.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=auth)
    assert client.post(url, headers=auth).status_code == 202
    (got,) = receiver.wait_for("/off", 1)
    assert got.headers[webhooks.EVENT_ID_HEADER] == ended["event_id"]
