"""Live run events for the SDK: Server-Sent Events with Last-Event-ID resume, or polling /events.

Polling stays as a fallback on purpose: some proxies buffer or cut event streams, and a server without
SSE answers the same URL with the JSON event list.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx

from agentruns.client_errors import AgentrunsError, connection_error, error_from_response, parse_retry_after
from agentruns.client_sse import TERMINAL, SSEDecoder, event_from_sse, normalize_event, terminal_status

if TYPE_CHECKING:
    from agentruns.client import AgentRuns, Transport

# The server sends a keepalive comment every 15 s; a silent connection for longer than this is dead.
SSE_READ_TIMEOUT = 45.0
MAX_POLL_INTERVAL = 2.0


class _NotStreaming(Exception):
    """The server answered the SSE request with JSON: it carries that first page of events."""

    def __init__(self, events: list[dict]):
        super().__init__("server does not stream events")
        self.events = events


def _sse_connection(t: Transport, run_id: str, after_seq: int) -> Iterator[dict]:
    """One SSE connection: yields run events; raises _NotStreaming, _Retry, AgentrunsError or httpx errors."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if after_seq:
        headers["Last-Event-ID"] = str(after_seq)
    timeout = httpx.Timeout(t.timeout, read=SSE_READ_TIMEOUT)
    with t.http.stream("GET", f"/api/v1/agent-runs/{run_id}/events", params={"after_seq": after_seq},
                       headers=headers, timeout=timeout) as resp:
        if resp.status_code >= 400:
            resp.read()
            err = error_from_response(resp)
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Retry(err, parse_retry_after(resp.headers.get("retry-after")))
            raise err
        ctype = resp.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            resp.read()
            try:
                rows = resp.json()["data"]
            except (ValueError, KeyError, TypeError):
                rows = []
            raise _NotStreaming([normalize_event(e) for e in rows])
        decoder = SSEDecoder()
        for line in resp.iter_lines():
            msg = decoder.feed(line)
            if msg is None:
                continue
            event = event_from_sse(msg)
            if event is not None:
                yield event


class _Retry(Exception):
    """A transient HTTP error (429, 5xx) on the SSE request: reconnect after a backoff."""

    def __init__(self, err: AgentrunsError, retry_after: float | None):
        super().__init__(str(err))
        self.err, self.retry_after = err, retry_after


def _poll(runs: AgentRuns, run_id: str, after_seq: int, interval: float) -> Iterator[dict]:
    """Poll /events until the terminal status event (or the run is terminal and no event is left)."""
    idle = interval
    while True:
        rows = runs.events_page(run_id, after_seq)
        for event in rows:
            after_seq = max(after_seq, event["seq"])
            yield event
            if terminal_status(event):
                return
        if rows:
            idle = interval
            continue
        # Nothing new: the terminal event may have been compacted away, so ask the run itself. Its events are
        # committed with its status, so one more page after seeing it terminal is complete.
        if runs.get(run_id)["status"] in TERMINAL:
            yield from runs.events_page(run_id, after_seq)
            return
        time.sleep(idle)
        idle = min(MAX_POLL_INTERVAL, idle * 1.5)


def stream_events(runs: AgentRuns, t: Transport, run_id: str, after_seq: int, transport: str,
                  poll_interval: float) -> Iterator[dict]:
    """The generator behind AgentRuns.stream (see there)."""
    from agentruns.client import backoff_delay  # circular at import time only

    if transport not in ("auto", "sse", "poll"):
        raise ValueError("transport must be 'auto', 'sse' or 'poll'")
    last = after_seq
    failures = 0
    while transport != "poll":
        got_any, failure, retry_after = False, None, None
        try:
            for event in _sse_connection(t, run_id, last):
                if event["seq"] <= last:  # a server that replays on resume: never yield twice
                    continue
                got_any, failures, last = True, 0, event["seq"]
                yield event
                if terminal_status(event):
                    return
            # The stream ended without the terminal event (a proxy or server restart cut it): resume.
            if not got_any and runs.get(run_id)["status"] in TERMINAL:
                yield from runs.events(run_id, last)
                return
        except _NotStreaming as exc:
            if transport == "sse":
                raise AgentrunsError("the server does not stream events (no text/event-stream answer)",
                                     code="sse_unsupported") from None
            for event in exc.events:
                last = max(last, event["seq"])
                yield event
                if terminal_status(event):
                    return
            break  # continue by polling
        except _Retry as exc:
            failure, retry_after = exc.err, exc.retry_after
        except httpx.TransportError as exc:
            failure = connection_error(exc)
        if failure is not None or not got_any:
            failures += 1
            if failures > t.max_retries:
                raise failure or AgentrunsError("the event stream keeps ending without events",
                                                code="stream_ended")
            time.sleep(backoff_delay(failures - 1, t.backoff_base, retry_after))
    yield from _poll(runs, run_id, last, poll_interval)
