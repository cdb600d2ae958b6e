"""Listing: filters, metadata matching and keyset pagination."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture()
def client(quiet_client):
    """Status filters need runs that stay where the test put them: no worker may pick them up."""
    return quiet_client


def _make(client, auth, n, **extra):
    ids = []
    for i in range(n):
        body = {"prompt": f"p{i}", "sandbox_id": "box-1", **extra}
        resp = client.post("/api/v1/agent-runs", json=body, headers=auth)
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["data"]["id"])
    return ids


def test_pagination_walks_every_run_once_newest_first(client, auth, local_device):
    ids = _make(client, auth, 7)
    seen, cursor = [], None
    while True:
        url = "/api/v1/agent-runs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=auth).get_json()
        seen += [r["id"] for r in body["data"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    row = client.get("/api/v1/agent-runs?limit=1", headers=auth).get_json()["data"][0]
    assert set(row) == {"id", "target_kind", "target_id", "provider", "status", "prompt", "created_at",
                        "finished_at", "metadata"}


def test_filters(client, auth, local_device):
    client.post("/api/v1/devices", json={"id": "pc-1", "kind": "computer", "driver": "local"}, headers=auth)
    a = _make(client, auth, 2, metadata={"team": "red", "n": 3})
    b = _make(client, auth, 1, metadata={"team": "blue"}, provider="codex")
    c = client.post("/api/v1/agent-runs", json={"prompt": "c", "computer_id": "pc-1"}, headers=auth).get_json()["data"]
    client.post(f"/api/v1/agent-runs/{a[0]}/cancel", headers=auth)

    def ids(query):
        resp = client.get(f"/api/v1/agent-runs?{query}", headers=auth)
        assert resp.status_code == 200, resp.get_json()
        return {r["id"] for r in resp.get_json()["data"]}

    assert ids("metadata[team]=red") == set(a)
    assert ids("metadata[n]=3") == set(a)
    assert ids("metadata[team]=red&status=queued") == {a[1]}
    assert ids("status=canceled") == {a[0]}
    assert ids("provider=codex") == set(b)
    assert ids("computer_id=pc-1") == {c["id"]}
    assert ids("target_kind=computer") == {c["id"]}
    assert ids("sandbox_id=box-1") == set(a + b)
    assert ids("target_id=pc-1") == {c["id"]}
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(f"created_after={future}") == set()
    assert ids(f"created_before={future}&created_after={past}") == set(a + b + [c["id"]])


def test_bad_list_queries(client, auth, local_device):
    for query, field in [("limit=0", "limit"), ("limit=101", "limit"), ("status=done", "status"),
                         ("cursor=garbage", "cursor"), ("created_after=yesterday", "created_after"),
                         ("colour=red", "colour"), ("target_id=a&sandbox_id=b", "target_id")]:
        resp = client.get(f"/api/v1/agent-runs?{query}", headers=auth)
        assert resp.status_code == 422, (query, resp.get_json())
        assert field in resp.get_json()["error"]["details"]["fields"], query


def test_a_list_entry_shows_the_same_values_as_the_run_itself(client, auth, local_device):
    """The list reads only the summary's columns: each one must still match the run."""
    from core import db, runstate
    from core.models import Run

    (rid,) = _make(client, auth, 1, metadata={"team": "infra"})
    with db.session() as s:
        tenant = s.get(Run, uuid.UUID(rid)).tenant_id
    with db.transaction() as conn:
        claimed = runstate.claim_next(conn, tenant, "box-1", "test", 30)
        runstate.finish(conn, claimed.id, claimed.epoch, "succeeded", output="done", stdout="x" * 1000)
    entry = client.get("/api/v1/agent-runs?limit=1", headers=auth).get_json()["data"][0]
    run = client.get(f"/api/v1/agent-runs/{rid}", headers=auth).get_json()["data"]
    assert entry["id"] == rid and entry["finished_at"] is not None
    assert entry == {key: run[key] for key in entry}
