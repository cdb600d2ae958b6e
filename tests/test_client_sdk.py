"""The Python SDK against a live API, worker and beat (no mocks of the server). Every test runs twice: on
the sync `Client` and on the `AsyncClient` (driven through tests.test_sdk_core.open_twin), which must
behave identically.

Faults are injected by a small TCP proxy between the SDK and the real server (`FaultProxy`).
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from contextlib import ExitStack
from types import SimpleNamespace

import httpx
import pytest

from agentruns.client import (
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from tests.conftest import make_key
from tests.test_sdk_core import open_twin

pytestmark = pytest.mark.e2e


def new_tenant(live_server: str, workdir) -> SimpleNamespace:
    """A fresh tenant, its key and a `local` sandbox "box" running in `workdir`."""
    _, key = make_key()
    with Client(live_server, key) as c:
        c.devices.create(id="box", kind="sandbox", driver="local", default_cwd=str(workdir))
    return SimpleNamespace(url=live_server, key=key, device="box", workdir=workdir)


@pytest.fixture()
def tenant(app, live_server, tmp_path):
    return new_tenant(live_server, tmp_path)


@pytest.fixture(params=["sync", "async"])
def connect(request, tenant):
    """connect(url=tenant's, key=tenant's, **options): a client of this test's kind, closed at teardown."""
    with ExitStack() as stack:
        def make(url: str | None = None, key: str | None = None, **options):
            return stack.enter_context(open_twin(request.param, url or tenant.url, key or tenant.key, **options))
        yield make


@pytest.fixture()
def client(connect):
    return connect(backoff_base=0.05)


def custom(command: str, **extra) -> dict:
    return dict(sandbox_id="box", provider="custom", command=command, **extra)


def wait_status(client, run_id: str, status: str, seconds: float = 15) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = client.agent_runs.get(run_id)
        if run["status"] == status:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {status}: {run}")


# --- a fault-injecting TCP proxy ------------------------------------------------------------------------
def _read_request(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 request (head and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class FaultProxy:
    """Forwards 127.0.0.1:port to the live server. Each new connection takes the next action of `plan`
    (then "pass"): "drop" forwards the request, waits until the server starts answering (so it really got
    it), then closes without a byte of response; ("reply", raw) answers with `raw` without forwarding;
    ("cut_after_events", n) passes the response through but closes after n complete SSE events."""

    def __init__(self, upstream: str, plan: list):
        self.upstream = httpx.URL(upstream)
        self.plan = list(plan)
        self.requests: list[bytes] = []  # the first request of each connection
        self.server_answered = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            action = self.plan.pop(0) if self.plan else "pass"
            threading.Thread(target=self._handle, args=(conn, action), daemon=True).start()

    def _handle(self, conn: socket.socket, action) -> None:
        try:
            self._serve(conn, action)
        finally:
            # shutdown, not just close: a thread blocked in recv() keeps a closed socket's connection open.
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _serve(self, conn: socket.socket, action) -> None:
        request = _read_request(conn)
        self.requests.append(request)
        if isinstance(action, tuple) and action[0] == "reply":
            conn.sendall(action[1])
            return
        with socket.create_connection((self.upstream.host, self.upstream.port)) as up:
            up.sendall(request)
            if action == "drop":
                if up.recv(1):
                    self.server_answered.set()
                return
            limit = action[1] if isinstance(action, tuple) else None
            self._pipe(conn, up, limit)

    @staticmethod
    def _pipe(conn: socket.socket, up: socket.socket, events_limit: int | None) -> None:
        def client_to_up():
            try:
                while chunk := conn.recv(65536):
                    up.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=client_to_up, daemon=True).start()
        seen, sent = b"", 0
        try:
            while chunk := up.recv(65536):
                if events_limit is None:
                    conn.sendall(chunk)
                    continue
                seen += chunk
                body = seen.find(b"\r\n\r\n")
                ends = [] if body < 0 else [body + m.end() for m in re.finditer(rb"id:.*?\n\n", seen[body:], re.S)]
                if len(ends) >= events_limit:
                    # Forward exactly up to the end of the n-th event, then cut the connection.
                    conn.sendall(seen[sent:ends[events_limit - 1]])
                    return
                conn.sendall(seen[sent:])
                sent = len(seen)
        except OSError:
            pass


def _header(request: bytes, name: str) -> str | None:
    m = re.search(rb"(?im)^" + name.encode() + rb":\s*(.+?)\r?$", request)
    return m.group(1).decode() if m else None


# --- tests ------------------------------------------------------------------------------------------------
def test_run_waits_for_the_finished_run(client, tenant):
    run = client.agent_runs.run(prompt="hello sdk", **custom('echo "got:$(cat)"; pwd', metadata={"t": "run"}))
    assert run["status"] == "succeeded", run
    assert run["output"] == f"got:hello sdk\n{tenant.workdir}\n" and run["exit_code"] == 0
    assert run["metadata"] == {"t": "run"} and run["finished_at"]
    failed = client.agent_runs.run(prompt="p", **custom("echo oops >&2; exit 4"))
    assert failed["status"] == "failed" and failed["exit_code"] == 4
    assert failed["error"]["code"] == "nonzero_exit" and failed["stderr"] == "oops\n"
    assert client.agent_runs.get(failed["id"]) == failed


def test_wait_timeout_carries_the_run(client):
    run = client.agent_runs.create(prompt="p", **custom("sleep 30"))
    with pytest.raises(WaitTimeout) as info:
        client.agent_runs.wait(run["id"], timeout=1)
    assert info.value.run["id"] == run["id"] and info.value.run["status"] in ("queued", "running")
    client.agent_runs.cancel(run["id"])


def test_list_follows_next_cursor(client):
    batch = uuid.uuid4().hex[:8]
    ids = [client.agent_runs.create(prompt=f"n{i}", **custom("true", metadata={"batch": batch}))["id"]
           for i in range(5)]
    client.agent_runs.create(prompt="other", **custom("true", metadata={"batch": "other"}))
    first = client.agent_runs.page(limit=2, metadata={"batch": batch})
    assert len(first["data"]) == 2 and first["next_cursor"]
    listed = [r["id"] for r in client.agent_runs.list(limit=2, metadata={"batch": batch})]
    assert listed == ids[::-1]  # newest first, all three pages, nothing from the other batch
    assert {r["prompt"] for r in client.agent_runs.list(provider="custom", metadata={"batch": batch})} == \
        {f"n{i}" for i in range(5)}


def test_cancel_queued_and_running_runs(client):
    # The device runs one run at a time, so the second stays queued behind the first.
    running = client.agent_runs.create(prompt="p", **custom("echo started; sleep 30"))
    wait_status(client, running["id"], "running")
    queued = client.agent_runs.create(prompt="p", **custom("sleep 30"))
    canceled = client.agent_runs.cancel(queued["id"])
    assert canceled["status"] == "canceled" and canceled["error"]["code"] == "canceled"
    assert client.agent_runs.cancel(queued["id"])["status"] == "canceled"  # repeating changes nothing
    asked = client.agent_runs.cancel(running["id"])
    assert asked["status"] == "running" and asked["cancel_requested"] is True
    done = client.agent_runs.wait(running["id"], timeout=15)
    assert done["status"] == "canceled", done
    finished = client.agent_runs.run(prompt="p", **custom("true"))
    with pytest.raises(Conflict) as info:
        client.agent_runs.cancel(finished["id"])
    assert info.value.status == 409 and info.value.request_id


@pytest.mark.parametrize("transport", ["auto", "poll"])
def test_stream_yields_live_events_until_the_end(client, transport):
    run = client.agent_runs.create(prompt="p", **custom("echo one; echo two >&2; sleep 1.5; echo three"))
    events, status_when_first_output = [], None
    for event in client.agent_runs.stream(run["id"], transport=transport):
        if event["type"] == "stdout" and status_when_first_output is None:
            status_when_first_output = client.agent_runs.get(run["id"])["status"]
        events.append(event)
    assert status_when_first_output == "running"  # output arrived while the command still ran
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert [e["data"]["status"] for e in events if e["type"] == "status"] == ["queued", "running", "succeeded"]
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "one\nthree\n"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "two\n"
    assert client.agent_runs.events(run["id"]) == events
    later = client.agent_runs.events(run["id"], after_seq=seqs[1])
    assert later == events[2:]
    resumed = list(client.agent_runs.stream(run["id"], after_seq=seqs[1], transport=transport))
    assert resumed == events[2:]


def _sse_supported(tenant, run_id) -> bool:
    with httpx.stream("GET", f"{tenant.url}/api/v1/agent-runs/{run_id}/events",
                      headers={"Accept": "text/event-stream", "Authorization": f"Bearer {tenant.key}"}) as resp:
        return resp.headers.get("content-type", "").startswith("text/event-stream")


def test_sse_stream_resumes_with_last_event_id(client, connect, tenant):
    run = client.agent_runs.create(prompt="p", **custom("echo a; sleep 0.3; echo b; sleep 0.3; echo c"))
    if not _sse_supported(tenant, run["id"]):
        pytest.skip("the server does not serve text/event-stream on /events yet")
    proxy = FaultProxy(tenant.url, [("cut_after_events", 2)])
    try:
        events = list(connect(proxy.url, backoff_base=0.05).agent_runs.stream(run["id"], transport="sse"))
    finally:
        proxy.close()
    assert events == client.agent_runs.events(run["id"])
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\nb\nc\n"
    assert _header(proxy.requests[1], "Last-Event-ID") == str(events[1]["seq"])


def test_stream_falls_back_to_polling_keeping_the_json_page(client, connect, tenant):
    run = client.agent_runs.run(prompt="p", **custom("echo a; echo b >&2; echo c"))
    events = client.agent_runs.events(run["id"])
    # A proxy that does not stream answers the SSE request with a JSON page: marked, so the test sees that
    # the SDK delivers this page itself rather than dropping it and reading the events again by polling.
    page = [{**e, "from_json_page": True} for e in events[:2]]
    body = json.dumps({"data": page}).encode()
    as_json = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    proxy = FaultProxy(tenant.url, [("reply", as_json)])
    try:
        streamed = list(connect(proxy.url, backoff_base=0.05).agent_runs.stream(run["id"]))
    finally:
        proxy.close()
    assert streamed == page + events[2:] and streamed[-1]["data"]["status"] == "succeeded"
    assert _header(proxy.requests[0], "Accept") == "text/event-stream"
    poll_line = proxy.requests[1].split(b"\r\n")[0].decode()
    assert f"after_seq={page[-1]['seq']}&" in poll_line  # polling went on after the page


def test_create_retried_after_a_dropped_connection_makes_one_run(client, connect, tenant):
    proxy = FaultProxy(tenant.url, ["drop"])
    batch = uuid.uuid4().hex[:8]
    try:
        run = connect(proxy.url, backoff_base=0.05).agent_runs.create(
            prompt="once", **custom("true", metadata={"batch": batch}))
    finally:
        proxy.close()
    assert proxy.server_answered.is_set()  # the server did process the first, dropped request
    assert len(proxy.requests) == 2
    keys = {_header(r, "Idempotency-Key") for r in proxy.requests}
    assert len(keys) == 1 and None not in keys
    assert [r["id"] for r in client.agent_runs.list(metadata={"batch": batch})] == [run["id"]]


def test_429_and_5xx_are_retried_with_the_same_key(client, connect, tenant):
    body = b'{"error": {"code": "rate_limited", "message": "slow down", "details": {}}, "request_id": "x"}'
    too_many = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    unavailable = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy"
    batch = uuid.uuid4().hex[:8]
    proxy = FaultProxy(tenant.url, [("reply", too_many), ("reply", unavailable)])
    try:
        via_proxy = connect(proxy.url, backoff_base=0.05)
        started = time.monotonic()
        run = via_proxy.agent_runs.create(prompt="p", **custom("true", metadata={"batch": batch}))
        assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    finally:
        proxy.close()
    assert len(proxy.requests) == 3 and len({_header(r, "Idempotency-Key") for r in proxy.requests}) == 1
    assert len({_header(r, "X-Request-Id") for r in proxy.requests}) == 1  # one logical request
    assert [r["id"] for r in client.agent_runs.list(metadata={"batch": batch})] == [run["id"]]
    proxy = FaultProxy(tenant.url, [("reply", unavailable), ("reply", too_many)])
    try:
        assert connect(proxy.url, backoff_base=0.05).agent_runs.get(run["id"])["id"] == run["id"]  # resent
        no_retry = connect(proxy.url, max_retries=0)
        proxy.plan = [("reply", too_many)]
        with pytest.raises(RateLimited) as info:
            no_retry.agent_runs.get(run["id"])
    finally:
        proxy.close()
    assert info.value.retry_after == 1 and info.value.message == "slow down" and info.value.status == 429


def test_typed_errors(client, connect, tenant):
    with pytest.raises(NotFound) as info:
        client.agent_runs.get(str(uuid.uuid4()))
    assert info.value.status == 404 and info.value.code == "not_found" and info.value.request_id
    with pytest.raises(ValidationFailed) as info:
        client.agent_runs.create(prompt="", sandbox_id="box", provider="custom", command="true", timeout=0)
    assert info.value.status == 422 and set(info.value.fields) == {"prompt", "timeout"}
    assert "prompt" in info.value.message and info.value.code == "validation_error"
    with pytest.raises(ValidationFailed) as info:
        client.agent_runs.create(prompt="p", sandbox_id="box", provider="custom")
    assert info.value.fields == {"command": ["required for provider custom"]}
    with pytest.raises(ValidationFailed) as info:
        client.agent_runs.create(prompt="p", sandbox_id="nope", provider="custom", command="true")
    assert "target_id" in info.value.fields
    with pytest.raises(Unauthorized) as info:
        connect(key="ark_live_wrong").agent_runs.get(str(uuid.uuid4()))
    assert info.value.status == 401 and "invalid" in info.value.message
    with pytest.raises(NotFound):
        client.devices.get("missing")
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ConnectionFailed) as info:
        connect(f"http://127.0.0.1:{port}", max_retries=1, backoff_base=0.01).agent_runs.get(str(uuid.uuid4()))
    assert info.value.status is None and info.value.code == "connection_failed"


def test_idempotency_key_replays_and_rejects_other_payload(client):
    key = f"k-{uuid.uuid4()}"
    first = client.agent_runs.create(prompt="p", idempotency_key=key, **custom("true"))
    again = client.agent_runs.create(prompt="p", idempotency_key=key, **custom("true"))
    assert again["id"] == first["id"]
    with pytest.raises(ValidationFailed) as info:
        client.agent_runs.create(prompt="different", idempotency_key=key, **custom("true"))
    assert info.value.code == "idempotency_key_reused"


def test_devices_crud(client, tmp_path):
    dev = client.devices.create(id="d2", kind="computer", driver="local", default_cwd=str(tmp_path),
                                labels={"team": "a"}, env={"SECRET": "s"})
    assert dev["id"] == "d2" and dev["env_names"] == ["SECRET"] and "env" not in dev
    assert {d["id"] for d in client.devices.list()} == {"box", "d2"}
    assert client.devices.update("d2", name="second")["name"] == "second"
    assert client.devices.get("d2")["labels"] == {"team": "a"}
    client.devices.delete("d2")
    with pytest.raises(NotFound):
        client.devices.get("d2")


def test_async_client_used_natively(tenant):
    """The tests above drive AsyncClient through a blocking adapter; this one uses `await`/`async for` as a user
    does, including leaving a stream early."""
    from agentruns.client_async import AsyncClient

    async def main():
        async with AsyncClient(tenant.url, tenant.key) as client:
            batch = uuid.uuid4().hex[:8]
            run = await client.agent_runs.run(prompt="async", **custom('echo "a:$(cat)"', metadata={"b": batch}))
            assert run["status"] == "succeeded" and run["output"] == "a:async\n"
            other = await client.agent_runs.create(prompt="x", **custom("echo x; sleep 0.5; echo y",
                                                                         metadata={"b": batch}))
            events = [e async for e in client.agent_runs.stream(other["id"])]
            assert "".join(e["data"] for e in events if e["type"] == "stdout") == "x\ny\n"
            assert events[-1]["data"]["status"] == "succeeded" and events == await client.agent_runs.events(other["id"])
            polled = [e async for e in client.agent_runs.stream(other["id"], transport="poll")]
            assert polled == events
            assert [r["id"] async for r in client.agent_runs.list(limit=1, metadata={"b": batch})] == \
                [other["id"], run["id"]]
            with pytest.raises(NotFound):
                await client.agent_runs.get(str(uuid.uuid4()))
            first = None
            async for event in client.agent_runs.stream(other["id"]):
                first = event
                break
            assert first == events[0]

    asyncio.run(main())
