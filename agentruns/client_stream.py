"""Live run events as an I/O-free flow: Server-Sent Events with Last-Event-ID resume, or polling /events.

Polling stays as a fallback on purpose: some proxies buffer or cut event streams, and a server without
SSE answers the same URL with the JSON event list (whose events are delivered, then polling goes on
after them). Whatever the path, an event is delivered once (by seq) and the stream stops at the run's
terminal status event.
"""
from __future__ import annotations

from dataclasses import dataclass

import httpx

from agentruns._sdk_protocol import Call, Close, Config, Emit, Flow, Open, ReadBody, ReadLine, Sleep
from agentruns._sdk_resources import RUNS, RunFlows
from agentruns._sdk_retry import backoff_delay
from agentruns.client_errors import AgentrunsError, connection_error, error_from_response, parse_retry_after
from agentruns.client_sse import SSEDecoder, event_from_sse, normalize_event, terminal_status
from agentruns.vocabulary import TERMINAL

# The server sends a keepalive comment every 15 s; a silent connection for longer than this is dead.
SSE_READ_TIMEOUT = 45.0
MAX_POLL_INTERVAL = 2.0
TRANSPORTS = ("auto", "sse", "poll")


@dataclass
class Cursor:
    """Where a stream stands: the last seq delivered (dedupe, Last-Event-ID) and whether it has ended."""

    last: int = 0
    ended: bool = False

    def accept(self, event: dict) -> bool:
        """Should `event` be delivered? No for one already delivered (a server that replays on resume)
        or anything after the terminal status event."""
        if self.ended or event["seq"] <= self.last:
            return False
        self.last = event["seq"]
        self.ended = terminal_status(event) is not None
        return True


@dataclass
class Connection:
    """How one SSE connection went."""

    delivered: int = 0
    error: AgentrunsError | None = None  # a transient failure: reconnect after a backoff
    retry_after: float | None = None
    streaming: bool = True  # False: the server answered JSON, so go on by polling


def sse_call(cfg: Config, run_id: str, after_seq: int) -> Call:
    """The request of one SSE connection, resuming after `after_seq`."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if after_seq:
        headers["Last-Event-ID"] = str(after_seq)
    return Call("GET", f"{RUNS}/{run_id}/events", params={"after_seq": after_seq}, headers=headers,
                timeout=cfg.timeout, read_timeout=SSE_READ_TIMEOUT)


def stream(runs: RunFlows, run_id: str, after_seq: int = 0, transport: str = "auto",
           poll_interval: float = 0.5) -> Flow[None]:
    """Emit the run's events after `after_seq` until its terminal status event (see AgentRuns.stream)."""
    if transport not in TRANSPORTS:  # checked now, not when the caller starts iterating
        raise ValueError("transport must be 'auto', 'sse' or 'poll'")
    return _stream(runs, run_id, Cursor(after_seq), transport, poll_interval)


def _stream(runs: RunFlows, run_id: str, cursor: Cursor, transport: str, poll_interval: float) -> Flow[None]:
    cfg = runs.cfg
    failures = 0
    while transport != "poll":
        conn = yield from sse_connection(cfg, run_id, cursor, sse_only=transport == "sse")
        if cursor.ended:
            return
        if not conn.streaming:
            break
        if conn.delivered:
            failures = 0
        if conn.error is None:
            if conn.delivered:
                continue  # cut before the end (a proxy or a server restart): resume at once
            # Ended without a single event: the run may be over with its terminal event already behind us.
            if (yield from runs.get(run_id))["status"] in TERMINAL:
                yield from _emit_rest(runs, run_id, cursor)
                return
        failures += 1
        if failures > cfg.max_retries:
            raise conn.error or AgentrunsError("the event stream keeps ending without events", code="stream_ended")
        yield Sleep(backoff_delay(failures - 1, cfg.backoff_base, conn.retry_after))
    yield from poll(runs, run_id, cursor, poll_interval)


def sse_connection(cfg: Config, run_id: str, cursor: Cursor, sse_only: bool = False) -> Flow[Connection]:
    """One SSE connection: emit its new events; a transient failure comes back in the Connection."""
    delivered = 0
    try:
        head = yield Open(sse_call(cfg, run_id, cursor.last))
        if head.status_code >= 400:
            err = error_from_response((yield ReadBody()))
            if head.status_code == 429 or head.status_code >= 500:
                return Connection(error=err, retry_after=parse_retry_after(head.headers.get("retry-after")))
            raise err
        if "text/event-stream" not in head.headers.get("content-type", ""):
            page = json_page((yield ReadBody()))
            if sse_only:
                raise AgentrunsError("the server does not stream events (no text/event-stream answer)",
                                     code="sse_unsupported")
            for row in page:
                if cursor.accept(row):
                    yield Emit(row)
            return Connection(len(page), streaming=False)
        decoder = SSEDecoder()
        while (line := (yield ReadLine())) is not None:
            msg = decoder.feed(line)
            event = event_from_sse(msg) if msg is not None else None
            if event is not None and cursor.accept(event):
                delivered += 1
                yield Emit(event)
                if cursor.ended:
                    yield Close()
                    break
        return Connection(delivered)
    except httpx.TransportError as exc:
        return Connection(delivered, error=connection_error(exc))


def json_page(resp: httpx.Response) -> list[dict]:
    """The events of a JSON /events answer (none if the body is not one)."""
    try:
        rows = resp.json()["data"]
    except (ValueError, KeyError, TypeError):
        return []
    return [normalize_event(e) for e in rows] if isinstance(rows, list) else []


def poll(runs: RunFlows, run_id: str, cursor: Cursor, interval: float) -> Flow[None]:
    """Poll /events until the terminal status event (or the run is terminal and no event is left)."""
    idle = interval
    while not cursor.ended:
        fresh = 0
        for event in (yield from runs.events_page(run_id, cursor.last)):
            if cursor.accept(event):
                fresh += 1
                yield Emit(event)
        if cursor.ended:
            return
        if fresh:
            idle = interval
            continue
        # Nothing new: the terminal event may have been compacted away, so ask the run itself. Its events are
        # committed with its status, so the log read after seeing it terminal is complete.
        if (yield from runs.get(run_id))["status"] in TERMINAL:
            yield from _emit_rest(runs, run_id, cursor)
            return
        yield Sleep(idle)
        idle = min(MAX_POLL_INTERVAL, idle * 1.5)


def _emit_rest(runs: RunFlows, run_id: str, cursor: Cursor) -> Flow[None]:
    for event in (yield from runs.events(run_id, cursor.last)):
        if cursor.accept(event):
            yield Emit(event)
