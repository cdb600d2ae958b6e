"""The SDK's I/O-free core, with no server and no sockets.

The flows (agentruns._sdk_*, agentruns.client_stream) are driven directly by `drive`, which answers their
instructions from a script; the two shells (Client, AsyncClient) run on httpx.MockTransport, the same
interface a real connection pool implements, and must behave identically.
"""
from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from agentruns._sdk_protocol import Call, Close, Config, Emit, Flow, Open, ReadBody, ReadLine, Send, Sleep
from agentruns._sdk_resources import DeviceFlows, RunFlows, run_body
from agentruns._sdk_retry import backoff_delay, judge_failure, judge_response, send
from agentruns.client import (
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from agentruns.client_async import AsyncClient
from agentruns.client_errors import AgentrunsError, parse_retry_after
from agentruns.client_sse import SSEDecoder, event_from_sse, normalize_event, terminal_status
from agentruns.client_stream import Cursor, stream

pytestmark = pytest.mark.unit

CFG = Config("http://api.test", "k", timeout=5.0, max_retries=3, backoff_base=0.01)
RUN_ID = "r-1"


# --- a scripted driver for the flows ----------------------------------------------------------------------
@dataclass
class SSE:
    """The answer to an Open: an event stream of `lines`, then `then` raised (a dropped connection) or its end."""

    lines: list[str]
    then: Exception | None = None


@dataclass
class Trace:
    """What a flow did: its result, the items it emitted, the calls it made and the sleeps it asked for."""

    result: Any = None
    emitted: list = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    closes: int = 0


def drive(flow: Flow[Any], answer: Callable[[Call], Any]) -> Trace:
    """Perform `flow` against `answer(call)`: an httpx.Response, an exception to throw in, or SSE for an Open."""
    trace = Trace()
    lines: Iterator[str] = iter(())
    then: Exception | None = None
    body: httpx.Response | None = None
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            instruction = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as stop:
            trace.result = stop.value
            return trace
        reply, error = None, None
        match instruction:
            case Send(call) | Open(call):
                trace.calls.append(call)
                got = answer(call)
                if isinstance(got, Exception):
                    error = got
                elif isinstance(got, SSE):
                    assert isinstance(instruction, Open), "an event stream answers an Open only"
                    reply = httpx.Response(200, headers={"content-type": "text/event-stream"})
                    lines, then = iter(got.lines), got.then
                else:
                    reply = body = got
            case ReadLine():
                reply = next(lines, None)
                if reply is None and then is not None:
                    error, then = then, None
            case ReadBody():
                reply = body
            case Close():
                trace.closes += 1
            case Sleep(seconds):
                trace.sleeps.append(seconds)
            case Emit(item):
                trace.emitted.append(item)
            case _:
                raise AssertionError(f"unknown instruction {instruction!r}")


def script(*answers: Any) -> Callable[[Call], Any]:
    """Answers in order, whatever the call."""
    queue = list(answers)
    return lambda call: queue.pop(0)


def reply(status: int = 200, body: Any = None, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def ok(data: Any, status: int = 200) -> httpx.Response:
    return reply(status, {"data": data})


def error(status: int, code: str, details: dict | None = None, headers: dict | None = None) -> httpx.Response:
    return reply(status, {"error": {"code": code, "message": f"{code} happened", "details": details or {}},
                          "request_id": "req-1"}, headers)


def ev(seq: int, kind: str = "stdout", data: Any = None) -> dict:
    """A normalised run event; `kind` "succeeded" etc. makes a status event."""
    if kind in ("queued", "running", "succeeded", "failed", "canceled"):
        return {"seq": seq, "type": "status", "data": {"status": kind}, "at": "t"}
    return {"seq": seq, "type": kind, "data": f"line {seq}\n" if data is None else data, "at": "t"}


def sse_lines(*events: dict) -> list[str]:
    lines = [": keepalive", ""]
    for e in events:
        lines += [f"id: {e['seq']}", f"event: {e['type']}", f"data: {json.dumps(e)}", ""]
    return lines


# --- retry policy -------------------------------------------------------------------------------------
def test_backoff_is_capped_exponential_with_jitter_unless_retry_after():
    for attempt in range(12):
        ceiling = min(8.0, 0.5 * 2 ** attempt)
        delays = [backoff_delay(attempt, 0.5) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
    assert len({backoff_delay(3, 0.5) for _ in range(20)}) > 1  # jittered, not lockstep
    assert all(2.0 <= backoff_delay(0, 0.5, retry_after=2.0) <= 2.1 for _ in range(20))
    assert backoff_delay(0, 0.5, retry_after=3600) <= 60.1  # a silly Retry-After is capped


@pytest.mark.parametrize(("retry", "outcome", "resend"), [
    ("always", error(503, "unavailable"), True),
    ("safe", error(503, "unavailable"), False),
    ("safe", error(429, "rate_limited"), True),
    ("always", error(409, "idempotency_key_in_use"), True),
    ("safe", error(409, "idempotency_key_in_use"), False),
    ("always", error(409, "conflict"), False),
    ("always", error(404, "not_found"), False),
    ("always", error(422, "validation_error"), False),
    ("always", httpx.ReadError("reset"), True),
    ("always", httpx.RemoteProtocolError("cut"), True),
    ("safe", httpx.ReadError("reset"), False),  # it may have arrived: do not cancel twice
    ("safe", httpx.ConnectError("refused"), True),  # it never left
])
def test_which_attempts_may_be_resent(retry, outcome, resend):
    if isinstance(outcome, Exception):
        verdict = judge_failure(retry, outcome, "rid")
        assert isinstance(verdict.error, ConnectionFailed) and verdict.error.request_id == "rid"
    else:
        verdict = judge_response(retry, outcome)
        assert verdict.error is not None and verdict.error.status == outcome.status_code
    assert verdict.retryable is resend
    assert judge_response(retry, ok({})).error is None


def test_a_create_is_resent_as_the_same_call_honouring_retry_after():
    runs = RunFlows(CFG)
    trace = drive(runs.create(run_body(prompt="p", sandbox_id="box")), script(
        httpx.ConnectError("refused"), error(503, "unavailable"),
        error(429, "rate_limited", headers={"Retry-After": "2"}), ok({"id": RUN_ID, "status": "queued"}, 201)))
    assert trace.result == {"id": RUN_ID, "status": "queued"}
    first = trace.calls[0]
    assert all(c is first for c in trace.calls) and len(trace.calls) == 4
    assert first.headers["Idempotency-Key"].startswith("sdk-") and len(first.headers["Idempotency-Key"]) == 40
    assert len(first.request_id) == 32 and first.retry == "always"
    assert first.json == {"prompt": "p", "sandbox_id": "box"}
    assert len(trace.sleeps) == 3 and 2.0 <= trace.sleeps[2] <= 2.1
    other = drive(runs.create({"prompt": "p"}), script(ok({"id": "r-2", "status": "queued"}))).calls[0]
    assert other.headers["Idempotency-Key"] != first.headers["Idempotency-Key"]
    assert other.request_id != first.request_id


def test_a_given_idempotency_key_is_sent_and_the_timeout_covers_a_server_wait():
    call = drive(RunFlows(CFG).create({"prompt": "p", "wait": 20}, "mine"), script(ok({"status": "queued"}))).calls[0]
    assert call.headers["Idempotency-Key"] == "mine" and call.timeout == CFG.timeout + 20
    assert call.httpx_timeout().connect == 10.0 and call.httpx_timeout().read == 25.0  # connect stays short


def test_retries_stop_after_max_retries():
    with pytest.raises(ServerError) as info:
        drive(RunFlows(CFG).get(RUN_ID), script(*[error(502, "bad_gateway")] * 5))
    assert info.value.status == 502
    calls = []
    with pytest.raises(ServerError):
        drive(send(CFG, Call("GET", "/x", retry="always")), lambda c: calls.append(c) or error(500, "boom"))
    assert len(calls) == CFG.max_retries + 1
    with pytest.raises(NotFound):  # not retried at all
        drive(RunFlows(CFG).get(RUN_ID), script(error(404, "not_found")))


def test_responses_map_to_typed_errors():
    fields = {"prompt": ["required"], "timeout": ["must be at least 1"]}
    with pytest.raises(ValidationFailed) as info:
        drive(RunFlows(CFG).create({"prompt": ""}), script(error(422, "validation_error", {"fields": fields})))
    assert info.value.fields == fields and info.value.request_id == "req-1"
    with pytest.raises(Unauthorized):
        drive(DeviceFlows(CFG).list(), script(error(401, "unauthorized")))
    with pytest.raises(Conflict) as conflict:
        drive(RunFlows(CFG).cancel(RUN_ID), script(error(409, "conflict")))
    assert conflict.value.status == 409
    proxy_page = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(ServerError) as info:
        drive(DeviceFlows(CFG).delete("d"), script(proxy_page))
    assert info.value.code == "http_502" and "Bad Gateway" in info.value.message
    with pytest.raises(ServerError) as info:  # a 200 that is not our JSON (a captive portal)
        drive(DeviceFlows(CFG).get("d"), script(httpx.Response(200, text="<html/>")))
    assert info.value.code == "bad_response"
    limited = RateLimited("x", headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert limited.retry_after == 0.0  # a date in the past: go now
    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None


# --- wait and pagination -------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_wait_long_polls_in_slices_and_times_out_with_the_run():
    clock = FakeClock()

    def server(call: Call) -> httpx.Response:
        clock.now += (call.params or {}).get("wait", 0)  # the server holds a long-poll that long
        return ok({"id": RUN_ID, "status": "running"})

    with pytest.raises(WaitTimeout) as info:
        drive(RunFlows(CFG).wait(RUN_ID, timeout=150, poll_wait=60, clock=clock), server)
    assert info.value.run == {"id": RUN_ID, "status": "running"} and info.value.code == "wait_timeout"
    assert clock.now == 250.0
    steps = iter([ok({"id": RUN_ID, "status": "running"}), ok({"id": RUN_ID, "status": "succeeded"})])
    trace = drive(RunFlows(CFG).wait(RUN_ID, clock=clock), lambda call: next(steps))
    assert trace.result["status"] == "succeeded"
    assert [c.params for c in trace.calls] == [{"wait": 60}, {"wait": 60}]
    assert trace.calls[0].timeout == CFG.timeout + 60  # the HTTP timeout outlasts the server's wait


def test_run_creates_then_waits_unless_already_finished():
    trace = drive(RunFlows(CFG).run({"prompt": "p"}, clock=FakeClock()), script(
        ok({"id": RUN_ID, "status": "queued"}, 201), ok({"id": RUN_ID, "status": "failed"})))
    assert trace.result["status"] == "failed" and [c.method for c in trace.calls] == ["POST", "GET"]
    done = drive(RunFlows(CFG).run({"prompt": "p", "wait": True}), script(ok({"id": RUN_ID, "status": "succeeded"})))
    assert done.result["status"] == "succeeded" and len(done.calls) == 1


def test_list_follows_next_cursor_with_metadata_filters():
    trace = drive(RunFlows(CFG).list(2, {"batch": "b1"}, {"status": "failed", "cursor": "c0", "x": None}), script(
        reply(200, {"data": [{"id": 1}, {"id": 2}], "next_cursor": "c1"}),
        reply(200, {"data": [{"id": 3}], "next_cursor": None})))
    assert trace.emitted == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert [c.params for c in trace.calls] == [
        {"status": "failed", "cursor": "c0", "limit": 2, "metadata[batch]": "b1"},
        {"status": "failed", "cursor": "c1", "limit": 2, "metadata[batch]": "b1"}]


def test_events_reads_every_page():
    pages = iter([ok([ev(1), ev(2)]), ok([ev(3)])])
    trace = drive(RunFlows(CFG).events(RUN_ID, 0, limit=2), lambda call: next(pages))
    assert [e["seq"] for e in trace.result] == [1, 2, 3]
    assert [c.params for c in trace.calls] == [{"after_seq": 0, "limit": 2}, {"after_seq": 2, "limit": 2}]


# --- SSE and events ---------------------------------------------------------------------------------------
def test_sse_decoder():
    decoder = SSEDecoder()
    lines = [": keepalive", "id: 7", "event: status", 'data: {"seq": 7, "type": "status",',
             'data:  "data": "{\\"status\\": \\"running\\"}", "at": "t"}', "", "id: 8", "event: stdout", "data: hi", "",
             "retry: 500", "id: 9", "", "data: a", "data: b", ""]
    messages = [m for m in map(decoder.feed, lines) if m is not None]
    assert [m.id for m in messages] == ["7", "8", None] and decoder.last_event_id == "9"
    assert messages[2].data == "a\nb" and messages[2].event == "message"
    assert event_from_sse(messages[0]) == {"seq": 7, "type": "status", "data": {"status": "running"}, "at": "t"}
    assert event_from_sse(messages[1]) == {"seq": 8, "type": "stdout", "data": "hi", "at": None}
    assert event_from_sse(messages[2]) is None  # not a run event


def test_events_are_normalised_including_notes():
    note = normalize_event({"seq": 4, "type": "note", "data": '{"note": "live output capped"}', "at": "t"})
    assert note["data"] == {"note": "live output capped"} and terminal_status(note) is None
    assert normalize_event({"seq": 4, "type": "note", "data": "plain"})["data"] == {"note": "plain"}
    assert normalize_event({"seq": 1, "type": "status", "data": '"running"'})["data"] == {"status": "running"}
    assert normalize_event({"seq": 2, "type": "stdout", "data": '{"not": "decoded"}'})["data"] == '{"not": "decoded"}'
    decoder = SSEDecoder()
    msg = [m for m in map(decoder.feed, ["id: 5", "event: note", "data: capped", ""]) if m][0]
    assert event_from_sse(msg) == {"seq": 5, "type": "note", "data": {"note": "capped"}, "at": None}
    assert terminal_status(ev(9, "failed")) == "failed" and terminal_status(ev(2, "running")) is None


def test_cursor_dedupes_and_stops_at_the_terminal_event():
    cursor = Cursor(2)
    assert [cursor.accept(e) for e in (ev(1), ev(2), ev(3), ev(3), ev(4, "succeeded"), ev(5))] == \
        [False, False, True, False, True, False]
    assert cursor.last == 4 and cursor.ended


# --- the stream state machine -----------------------------------------------------------------------------
def test_stream_resumes_a_dropped_connection_with_last_event_id():
    events = [ev(1, "running"), ev(2), ev(3), ev(4, "succeeded")]
    trace = drive(stream(RunFlows(CFG), RUN_ID, 0, "auto"), script(
        SSE(sse_lines(events[0], events[1]), then=httpx.RemoteProtocolError("peer closed")),
        SSE(sse_lines(events[1], events[2], events[3], ev(5)))))  # replays 2; sends junk after the end
    assert trace.emitted == events
    first, second = trace.calls
    assert "Last-Event-ID" not in first.headers and first.read_timeout == 45.0
    assert second.headers["Last-Event-ID"] == "2" and second.params == {"after_seq": 2}
    assert second.headers["Accept"] == "text/event-stream"
    assert len(trace.sleeps) == 1 and trace.closes == 1  # one backoff; the stream closed at the end event


def test_stream_falls_back_to_polling_keeping_the_json_page():
    trace = drive(stream(RunFlows(CFG), RUN_ID, 0, "auto", poll_interval=0.25), script(
        ok([ev(1, "running"), ev(2)]), ok([]), ok({"id": RUN_ID, "status": "running"}), ok([ev(3), ev(4, "failed")])))
    assert [e["seq"] for e in trace.emitted] == [1, 2, 3, 4]
    assert [c.params for c in trace.calls[1:]] == [{"after_seq": 2, "limit": 500}, None,
                                                   {"after_seq": 2, "limit": 500}]
    assert trace.sleeps == [0.25]  # idle once between polls
    with pytest.raises(AgentrunsError) as info:
        drive(stream(RunFlows(CFG), RUN_ID, 0, "sse"), script(ok([ev(1)])))
    assert info.value.code == "sse_unsupported"


def test_stream_reconnects_after_5xx_honouring_retry_after_and_raises_other_errors():
    trace = drive(stream(RunFlows(CFG), RUN_ID, 3, "sse"), script(
        error(503, "unavailable", headers={"Retry-After": "4"}), SSE(sse_lines(ev(4), ev(5, "canceled")))))
    assert [e["seq"] for e in trace.emitted] == [4, 5] and 4.0 <= trace.sleeps[0] <= 4.1
    assert trace.calls[1].headers["Last-Event-ID"] == "3"
    with pytest.raises(NotFound):
        drive(stream(RunFlows(CFG), RUN_ID), script(error(404, "not_found")))
    with pytest.raises(ConnectionFailed):
        drive(stream(RunFlows(CFG), RUN_ID), script(*[httpx.ConnectError("refused")] * (CFG.max_retries + 1)))


def test_a_stream_that_ends_without_events_checks_the_run():
    trace = drive(stream(RunFlows(CFG), RUN_ID, 1), script(
        SSE([": keepalive", ""]), ok({"id": RUN_ID, "status": "succeeded"}), ok([ev(2), ev(3, "succeeded")])))
    assert [e["seq"] for e in trace.emitted] == [2, 3]
    assert [c.path for c in trace.calls] == [f"/api/v1/agent-runs/{RUN_ID}/events", f"/api/v1/agent-runs/{RUN_ID}",
                                             f"/api/v1/agent-runs/{RUN_ID}/events"]
    with pytest.raises(AgentrunsError) as info:  # a live run whose stream keeps ending empty
        drive(stream(RunFlows(CFG), RUN_ID), lambda call: SSE([]) if call.path.endswith("/events")
              else ok({"id": RUN_ID, "status": "running"}))
    assert info.value.code == "stream_ended"


def test_polling_dedupes_and_backs_off_while_idle():
    trace = drive(stream(RunFlows(CFG), RUN_ID, 0, "poll", poll_interval=1.0), script(
        ok([ev(1), ev(2)]), ok([ev(2)]), ok({"status": "running"}), ok([]), ok({"status": "running"}),
        ok([ev(3, "succeeded"), ev(4)])))
    assert [e["seq"] for e in trace.emitted] == [1, 2, 3]
    assert trace.sleeps == [1.0, 1.5]


def test_a_bad_transport_is_refused_at_once():
    with pytest.raises(ValueError):
        stream(RunFlows(CFG), RUN_ID, transport="websocket")


# --- the two shells on a fake transport ---------------------------------------------------------------
class Blocking:
    """Drives an AsyncClient from synchronous code on one event loop: coroutines run to completion, async
    iterators become iterators, and the namespaces (client.agent_runs, .devices, .webhooks, .keys) are wrapped
    alike."""

    def __init__(self, target: Any, runner: asyncio.Runner):
        self._target, self._runner = target, runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in ("agent_runs", "devices", "webhooks", "keys"):
            return Blocking(attr, self._runner)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._runner.run(_await(result))
            if hasattr(result, "__anext__"):
                return self._iterate(result)
            return result

        return call

    def _iterate(self, items: Any) -> Iterator[Any]:
        while True:
            try:
                yield self._runner.run(_await(items.__anext__()))
            except StopAsyncIteration:
                return


async def _await(awaitable: Any) -> Any:
    return await awaitable


@contextmanager
def open_twin(kind: str, base_url: str, api_key: str | None, *, transport: httpx.MockTransport | None = None,
              **kwargs: Any) -> Iterator[Any]:
    """A Client ("sync") or an AsyncClient made blocking ("async"), used identically by the tests."""
    root = Config.resolve(base_url, api_key).base_url  # what the client itself would connect to
    if kind == "sync":
        http = httpx.Client(base_url=root, transport=transport) if transport else None
        with Client(base_url, api_key, http=http, **kwargs) as client:
            yield client
        return
    with asyncio.Runner() as runner:
        ahttp = httpx.AsyncClient(base_url=root, transport=transport) if transport else None
        aclient = AsyncClient(base_url, api_key, http=ahttp, **kwargs)
        try:
            yield Blocking(aclient, runner)
        finally:
            runner.run(aclient.aclose())


class Dropped(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that breaks off after `chunks`, as a cut connection does."""

    def __init__(self, *chunks: bytes):
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection reset")


class FakeAPI:
    """An httpx.MockTransport handler answering from a list, in order; it records every request."""

    def __init__(self, *answers: Any):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer


def sse_response(*events: dict, dropped: bool = False) -> Callable[[], httpx.Response]:
    body = "\n".join(sse_lines(*events)).encode() + b"\n"
    headers = {"content-type": "text/event-stream"}
    if dropped:
        return lambda: httpx.Response(200, headers=headers, stream=Dropped(body))
    return lambda: httpx.Response(200, headers=headers, content=body)


@pytest.fixture(params=["sync", "async"])
def twin(request):
    """Open a client of either kind on a FakeAPI: twin(*answers) -> (client, api)."""
    with ExitStack() as stack:
        def make(*answers: Any, **kwargs: Any) -> tuple[Any, FakeAPI]:
            api = FakeAPI(*answers)
            kwargs.setdefault("backoff_base", 0.001)
            client = stack.enter_context(open_twin(request.param, "http://api.test/api/v1", "key-1",
                                                   transport=httpx.MockTransport(api), **kwargs))
            return client, api
        yield make


def test_the_twins_have_identical_signatures():
    def methods(obj: Any) -> dict[str, inspect.Signature]:
        return {name: inspect.signature(getattr(obj, name)).replace(return_annotation=inspect.Signature.empty)
                for name in dir(obj) if not name.startswith("_")}

    sync, asyn = Client("http://x", "k"), AsyncClient("http://x", "k")
    for namespace in ("agent_runs", "devices", "webhooks", "keys"):
        assert methods(getattr(sync, namespace)) == methods(getattr(asyn, namespace)), namespace
    assert set(methods(sync.agent_runs)) == {"create", "run", "get", "wait", "page", "list", "cancel", "events",
                                             "events_page", "stream"}
    assert set(methods(sync.devices)) == {"create", "list", "get", "update", "delete", "test"}
    assert set(methods(sync.keys)) == {"list", "get", "create", "revoke", "rotate"}
    assert list(inspect.signature(sync.agent_runs.create).parameters) == [
        "prompt", "target_id", "sandbox_id", "computer_id", "target_kind", "provider", "command", "runtime_command",
        "model", "cwd", "timeout", "metadata", "env", "wait", "webhook_url", "idempotency_key"]
    assert list(inspect.signature(asyn.agent_runs.run).parameters)[-1] == "wait_timeout"
    def defaults(cls: type) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]

    assert defaults(Client) == defaults(AsyncClient)
    sync.close()
    asyncio.run(asyn.aclose())


def test_both_twins_resend_a_create_with_the_same_keys(twin):
    client, api = twin(httpx.ConnectError("refused"), error(503, "unavailable", headers={"Retry-After": "0"}),
                       ok({"id": RUN_ID, "status": "queued"}, 201))
    run = client.agent_runs.create(prompt="p", sandbox_id="box", runtime_command="make test", metadata={"k": "v"})
    assert run == {"id": RUN_ID, "status": "queued"} and len(api.requests) == 3
    assert len({r.headers["Idempotency-Key"] for r in api.requests}) == 1
    assert len({r.headers["X-Request-Id"] for r in api.requests}) == 1
    first = api.requests[0]
    assert str(first.url) == "http://api.test/api/v1/agent-runs" and first.headers["Authorization"] == "Bearer key-1"
    assert first.headers["User-Agent"].startswith("agentruns-python/")
    assert json.loads(first.content) == {"prompt": "p", "sandbox_id": "box", "command": "make test",
                                         "metadata": {"k": "v"}}


def test_both_twins_raise_the_same_errors(twin):
    client, api = twin(error(422, "validation_error", {"fields": {"prompt": ["required"]}}), error(404, "not_found"),
                       *[httpx.ConnectError("refused")] * 3, max_retries=2)
    with pytest.raises(ValidationFailed) as info:
        client.agent_runs.create(prompt="")
    assert info.value.fields == {"prompt": ["required"]}
    with pytest.raises(NotFound):
        client.devices.get("nope")
    with pytest.raises(ConnectionFailed) as refused:
        client.agent_runs.get(RUN_ID)
    assert refused.value.code == "connection_failed" and len(api.requests) == 5
    with pytest.raises(ValueError):
        client.agent_runs.stream(RUN_ID, transport="bogus")


def test_both_twins_stream_resume_and_fall_back(twin):
    events = [ev(1, "running"), ev(2, "note", {"note": "capped"}), ev(3), ev(4, "succeeded")]
    client, api = twin(sse_response(*events[:2], dropped=True), sse_response(events[1], events[2], events[3]))
    assert list(client.agent_runs.stream(RUN_ID)) == events
    assert api.requests[1].headers["Last-Event-ID"] == "2" and api.requests[1].url.params["after_seq"] == "2"
    client, api = twin(ok(events[:2]), ok(events[2:]))
    assert list(client.agent_runs.stream(RUN_ID)) == events
    assert api.requests[1].url.params["after_seq"] == "2"  # polling goes on after the JSON page
    client, api = twin(reply(200, {"data": [{"id": 1}], "next_cursor": "c"}), reply(200, {"data": [{"id": 2}]}))
    assert [r["id"] for r in client.agent_runs.list(limit=1)] == [1, 2]


def test_both_twins_wait_until_the_end(twin):
    client, api = twin(ok({"id": RUN_ID, "status": "queued"}, 201), ok({"id": RUN_ID, "status": "running"}),
                       ok({"id": RUN_ID, "status": "succeeded"}))
    assert client.agent_runs.run(prompt="p", wait_timeout=60)["status"] == "succeeded"
    assert [r.method for r in api.requests] == ["POST", "GET", "GET"] and api.requests[1].url.params["wait"]
    client, api = twin(error(429, "rate_limited", headers={"Retry-After": "0.2"}), ok([]), max_retries=1)
    assert client.devices.list() == [] and len(api.requests) == 2
