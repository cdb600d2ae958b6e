"""The dispatcher's decisions and its HTTP sender, without a database: retries, backoff, Retry-After,
and the request-forgery check made on the address actually connected to."""
from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core.config import Settings
from tests.webhook_receiver import Receiver
from workers.webhook_dispatch import MAX_DELAY_SECONDS, Dispatcher, decide, render
from workers.webhook_http import Outcome, Sender, retry_after_seconds

pytestmark = pytest.mark.unit
SETTINGS = Settings(webhook_retry_base_seconds=10.0, webhook_max_attempts=12)


def answer(status: int | None, **kw) -> Outcome:
    return Outcome(status, None if status else "ConnectError", 5, **kw)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_delivered(status):
    assert decide(answer(status), 0, SETTINGS) == ("delivered", 0.0)


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_network_errors_timeouts_408_429_and_5xx_are_retried(status):
    state, delay = decide(answer(status), 0, SETTINGS)
    assert state == "pending" and 8.0 <= delay <= 12.0  # the base, with jitter


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 410, 422])
def test_other_answers_are_final(status):
    assert decide(answer(status), 0, SETTINGS)[0] == "failed"


def test_a_refusal_is_final():
    assert decide(Outcome(None, "refused: loopback", 1, final=True), 0, SETTINGS)[0] == "failed"


def test_backoff_grows_to_about_a_day_then_gives_up():
    delays = [decide(answer(500), n, replace(SETTINGS, webhook_retry_base_seconds=10.0))[1] for n in range(11)]
    assert all(b > a for a, b in zip(delays[:7], delays[1:7], strict=False))
    assert max(delays) <= MAX_DELAY_SECONDS * 1.2
    assert 16 * 3600 < sum(delays) < 40 * 3600  # "about a day"
    assert decide(answer(500), 11, SETTINGS) == ("failed", 0.0)  # the twelfth attempt was the last


def test_retry_after_is_honoured():
    state, delay = decide(answer(429, retry_after=120.0), 0, SETTINGS)
    assert state == "pending" and delay == 120.0
    assert decide(answer(503, retry_after=10 ** 9), 0, SETTINGS)[1] == MAX_DELAY_SECONDS


def test_retry_after_forms():
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds("²") is None  # a digit to str.isdigit(), not to float()
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_the_body_is_the_same_bytes_every_time():
    snapshot = {"id": str(uuid.uuid4()), "tenant_id": str(uuid.uuid4()), "target_kind": "sandbox", "target_id": "b",
                "provider": "custom", "prompt": "p", "status": "succeeded", "metadata": {"k": "v"},
                "cwd": "/w", "timeout": 60, "created_at": "2026-11-29T10:00:00.123456+00:00",
                "updated_at": "2026-11-29T10:00:01+00:00", "finished_at": "2026-11-29T10:00:01+00:00",
                "exit_code": 0, "stdout": "é\n", "webhook_url": None, "cancel_requested_at": None}
    at = datetime(2026, 11, 29, 10, 0, 1, tzinfo=UTC)
    body = render(uuid.UUID(int=1), "run.succeeded", at, snapshot)
    assert body == render(uuid.UUID(int=1), "run.succeeded", at, snapshot)
    assert body.startswith(b'{"id":"evt_00000000000000000000000000000001","type":"run.succeeded",'
                           b'"created_at":"2026-11-29T10:00:01.000000Z","data":{')
    assert "é".encode() in body and b'"metadata":{"k":"v"}' in body and b'"cancel_requested":false' in body


@pytest.fixture()
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def sender(**kw) -> Sender:
    return Sender(timeout=2.0, max_connections=4, **{"allow_http": True, "allow_private": False, **kw})


def test_the_sender_refuses_internal_addresses_at_connect_time(receiver):
    for url in (receiver.url("/x"), f"http://localhost:{receiver.port}/x"):
        outcome = sender().post(url, b"{}", [])
        assert outcome.final and outcome.status_code is None and "loopback" in outcome.error, outcome
    assert receiver.received == []


def test_dns_rebinding_is_caught_on_the_address_connected_to(receiver, monkeypatch):
    """A name that passed the check when stored and resolves to loopback now is refused."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1", *a, **k)
                        if host == "rebound.example.test" else real(host, *a, **k))
    outcome = sender().post(f"http://rebound.example.test:{receiver.port}/x", b"{}", [])
    assert outcome.final and "loopback" in outcome.error and receiver.received == []


def test_the_sender_posts_with_the_opt_in_and_follows_no_redirect(receiver):
    receiver.script["/r"] = [(307, {"Location": receiver.url("/elsewhere")})]
    outcome = sender(allow_private=True).post(receiver.url("/r"), b'{"a":1}', [("X-Test", "1")])
    assert outcome.status_code == 307 and outcome.error is None
    assert [(r.path, r.body, r.headers["X-Test"]) for r in receiver.received] == [("/r", b'{"a":1}', "1")]


def test_http_needs_its_own_opt_in(receiver):
    outcome = sender(allow_http=False, allow_private=True).post(receiver.url("/x"), b"{}", [])
    assert outcome.final and "http" in outcome.error and receiver.received == []


def test_a_dead_port_is_a_retryable_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the POST: nothing listens
    outcome = sender(allow_private=True).post(f"http://127.0.0.1:{port}/x", b"{}", [])
    assert outcome.status_code is None and not outcome.final and outcome.error


def test_a_slow_receiver_times_out(receiver):
    receiver.delay = 3.0
    outcome = Sender(timeout=0.5, max_connections=1, allow_http=True, allow_private=True).post(
        receiver.url("/slow"), b"{}", [])
    assert outcome.status_code is None and outcome.error.startswith("timeout") and not outcome.final
    assert outcome.latency_ms < 2500


class FakeQueue(Dispatcher):
    """The dispatch loop over an in-memory outbox of `due` deliveries that each take `seconds` to send."""

    def __init__(self, due: int, seconds: float):
        super().__init__(replace(SETTINGS, webhook_concurrency=4))
        self.due, self.seconds, self.sent = due, seconds, 0
        self._lock = threading.Lock()

    def _claim(self, limit):
        with self._lock:
            n = min(limit, self.due)
            self.due -= n
        return uuid.uuid4(), list(range(n))

    def _next_due_in(self):
        return -5.0 if self.due else None  # overdue for 5 s, as a backlog is

    def _deliver(self, claimed, token):
        time.sleep(self.seconds)
        with self._lock:
            self.sent += 1


def test_a_loop_with_a_backlog_stops_claiming_at_its_deadline_and_says_so():
    queue = FakeQueue(due=300, seconds=0.02)  # 4 slots: about 200 a second
    started = time.monotonic()
    attempts, backlog = queue.run(seconds=0.5)
    assert time.monotonic() - started < 0.5 + 0.02 + 0.5  # the deadline, the requests in flight, slack
    assert backlog and attempts == queue.sent and 10 < attempts < 300 and queue.due > 0
    while queue.run(seconds=0.5)[1]:
        pass
    assert queue.due == 0 and queue.sent == 300


def test_a_loop_that_runs_dry_returns_at_once_without_a_backlog():
    queue = FakeQueue(due=10, seconds=0.01)
    started = time.monotonic()
    assert queue.run(seconds=5.0) == (10, False)
    assert time.monotonic() - started < 1.0


def test_a_second_call_wakes_the_running_loop_instead_of_starting_another():
    queue = FakeQueue(due=0, seconds=0.0)
    queue._running.acquire()  # as if a loop ran in this process
    try:
        assert queue.run() is None and queue._wake.is_set()
    finally:
        queue._running.release()


def test_a_trickling_receiver_is_cut_at_the_requests_deadline():
    """One byte a second keeps every read under the per-step timeout; the whole request still ends."""
    import socket as sockets

    listener = sockets.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def trickle():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        try:
            for _ in range(30):
                conn.sendall(b"x")
                time.sleep(0.3)
        except OSError:
            pass
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    outcome = Sender(timeout=1.0, max_connections=1, allow_http=True, allow_private=True).post(
        f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", [])
    listener.close()
    assert time.monotonic() - started < 2.0 and outcome.error and outcome.error.startswith("timeout"), outcome


def test_a_url_the_http_library_refuses_is_a_final_failure_not_an_exception(receiver):
    outcome = sender(allow_private=True).post(receiver.url("/caf\u00e9"), b"{}", [])
    assert outcome.final and outcome.status_code is None and outcome.error.startswith("not sent")
