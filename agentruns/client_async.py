"""The async twin of agentruns.client: same methods, same retry policy and errors, on httpx.AsyncClient.

    async with AsyncClient() as client:
        run = await client.agent_runs.run(prompt="...", sandbox_id="box-1")
        async for event in client.agent_runs.stream(run["id"]): ...
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from agentruns.client import (DEFAULT_URL, _drop_none, backoff_delay, classify, create_options, decode_data,
                              default_headers, list_params)
from agentruns.client_errors import AgentrunsError, WaitTimeout, connection_error, error_from_response
from agentruns.client_sse import TERMINAL, SSEDecoder, event_from_sse, normalize_event, terminal_status
from agentruns.client_stream import MAX_POLL_INTERVAL, SSE_READ_TIMEOUT

__all__ = ["AsyncClient"]


class AsyncTransport:
    """httpx.AsyncClient with the SDK's retry policy."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_retries: int,
                 http: httpx.AsyncClient | None = None, backoff_base: float = 0.5):
        self.base_url = base_url.rstrip("/").removesuffix("/api/v1")
        self.timeout, self.max_retries, self.backoff_base = timeout, max_retries, backoff_base
        self.http = http or httpx.AsyncClient(base_url=self.base_url,
                                              timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self.http.headers.update(default_headers(api_key))

    async def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                      headers: dict[str, str] | None = None, timeout: float | None = None,
                      retry: str = "safe") -> httpx.Response:
        """Send with retries (see agentruns.client.classify)."""
        headers = {"X-Request-Id": uuid.uuid4().hex, **(headers or {})}
        attempt = 0
        while True:
            resp = None
            try:
                resp = await self.http.request(method, path, params=params, json=json, headers=headers,
                                               timeout=self.timeout if timeout is None else timeout)
                err, retryable, retry_after = classify(retry, headers["X-Request-Id"], resp=resp)
            except httpx.TransportError as exc:
                err, retryable, retry_after = classify(retry, headers["X-Request-Id"], exc=exc)
            if err is None:
                return resp
            if not retryable or attempt >= self.max_retries:
                raise err
            await asyncio.sleep(backoff_delay(attempt, self.backoff_base, retry_after))
            attempt += 1

    async def json(self, method: str, path: str, **kwargs) -> Any:
        """`request` and decode the body's `data`."""
        return decode_data(await self.request(method, path, **kwargs), method, path)


class AsyncAgentRuns:
    """`client.agent_runs` of AsyncClient (see agentruns.client.AgentRuns for the semantics)."""

    def __init__(self, transport: AsyncTransport):
        self._t = transport

    async def create(self, *, prompt: str, idempotency_key: str | None = None, runtime_command: str | None = None,
                     **fields) -> dict:
        """Create a run; an Idempotency-Key is generated when absent and reused by every retry."""
        body = _drop_none({"prompt": prompt, **fields})
        if runtime_command and "command" not in body:
            body["command"] = runtime_command
        options = create_options(body, idempotency_key, self._t.timeout)
        return await self._t.json("POST", "/api/v1/agent-runs", **options)

    async def get(self, run_id: str, wait: int | None = None) -> dict:
        """The full run; `wait=SECONDS` long-polls until it is terminal."""
        return await self._t.json("GET", f"/api/v1/agent-runs/{run_id}", params={"wait": int(wait)} if wait else None,
                                  timeout=self._t.timeout + (wait or 0), retry="always")

    async def wait(self, run_id: str, timeout: float | None = None, poll_wait: int = 60) -> dict:
        """Long-poll until terminal; WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = poll_wait if left is None else max(0, min(poll_wait, int(left + 0.999)))
            run = await self.get(run_id, wait=step)
            if run["status"] in TERMINAL:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(run, timeout)

    async def run(self, *, wait_timeout: float | None = None, **fields) -> dict:
        """Create a run and wait until it ends."""
        created = await self.create(**fields)
        if created["status"] in TERMINAL:
            return created
        return await self.wait(created["id"], timeout=wait_timeout)

    async def page(self, *, cursor: str | None = None, limit: int | None = None, metadata: dict | None = None,
                   **filters) -> dict:
        """One page: {"data": [...], "next_cursor": ...}."""
        params = list_params({**filters, "cursor": cursor, "limit": limit}, metadata)
        return (await self._t.request("GET", "/api/v1/agent-runs", params=params, retry="always")).json()

    async def list(self, *, limit: int | None = None, metadata: dict | None = None, **filters) -> AsyncIterator[dict]:
        """Every matching run, newest first, following next_cursor."""
        cursor = filters.pop("cursor", None)
        while True:
            page = await self.page(cursor=cursor, limit=limit, metadata=metadata, **filters)
            for row in page["data"]:
                yield row
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def cancel(self, run_id: str) -> dict:
        """Cancel a run (Conflict if it already finished)."""
        return await self._t.json("POST", f"/api/v1/agent-runs/{run_id}/cancel", retry="safe")

    async def events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict]:
        """The whole event log after `after_seq`."""
        out: list[dict] = []
        while True:
            rows = await self._t.json("GET", f"/api/v1/agent-runs/{run_id}/events",
                                      params={"after_seq": after_seq, "limit": limit}, retry="always")
            out.extend(normalize_event(e) for e in rows)
            if len(rows) < limit:
                return out
            after_seq = rows[-1]["seq"]

    async def stream(self, run_id: str, after_seq: int = 0, *, transport: str = "auto",
                     poll_interval: float = 0.5) -> AsyncIterator[dict]:
        """Live events until the terminal status: SSE with Last-Event-ID resume, or polling."""
        last, failures, mode = after_seq, 0, transport
        while mode != "poll":
            got_any, failure = False, None
            try:
                async with aclosing(self._sse(run_id, last)) as events:  # close the response on break too
                    async for event in events:
                        if event is None:  # the server answered JSON: it does not stream
                            if transport == "sse":
                                raise AgentrunsError("the server does not stream events", code="sse_unsupported")
                            mode = "poll"
                            break
                        if event["seq"] <= last:
                            continue
                        got_any, failures, last = True, 0, event["seq"]
                        yield event
                        if terminal_status(event):
                            return
                    else:
                        if not got_any and (await self.get(run_id))["status"] in TERMINAL:
                            for event in await self.events(run_id, last):
                                yield event
                            return
            except httpx.TransportError as exc:
                failure = connection_error(exc)
            except _Transient as exc:
                failure = exc.err
            if mode != "poll" and (failure is not None or not got_any):
                failures += 1
                if failures > self._t.max_retries:
                    raise failure or AgentrunsError("the event stream keeps ending", code="stream_ended")
                await asyncio.sleep(backoff_delay(failures - 1, self._t.backoff_base))
        idle = poll_interval
        while True:
            rows = await self.events(run_id, last, limit=500)
            for event in rows:
                last = max(last, event["seq"])
                yield event
                if terminal_status(event):
                    return
            if not rows and (await self.get(run_id))["status"] in TERMINAL:
                for event in await self.events(run_id, last):
                    yield event
                return
            idle = poll_interval if rows else min(MAX_POLL_INTERVAL, idle * 1.5)
            await asyncio.sleep(0 if rows else idle)

    async def _sse(self, run_id: str, after_seq: int) -> AsyncIterator[dict | None]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if after_seq:
            headers["Last-Event-ID"] = str(after_seq)
        async with self._t.http.stream("GET", f"/api/v1/agent-runs/{run_id}/events", params={"after_seq": after_seq},
                                       headers=headers, timeout=httpx.Timeout(self._t.timeout,
                                                                              read=SSE_READ_TIMEOUT)) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                err = error_from_response(resp)
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise _Transient(err)
                raise err
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                yield None
                return
            decoder = SSEDecoder()
            async for line in resp.aiter_lines():
                msg = decoder.feed(line)
                event = event_from_sse(msg) if msg is not None else None
                if event is not None:
                    yield event


class _Transient(Exception):
    def __init__(self, err: AgentrunsError):
        super().__init__(str(err))
        self.err = err


class AsyncDevices:
    """`client.devices` of AsyncClient."""

    def __init__(self, transport: AsyncTransport):
        self._t = transport

    async def create(self, **fields) -> dict:
        """Register a device."""
        return await self._t.json("POST", "/api/v1/devices", json=_drop_none(fields))

    async def list(self) -> list[dict]:
        """All devices of the tenant."""
        return await self._t.json("GET", "/api/v1/devices", retry="always")

    async def get(self, device_id: str) -> dict:
        """One device."""
        return await self._t.json("GET", f"/api/v1/devices/{device_id}", retry="always")

    async def update(self, device_id: str, **fields) -> dict:
        """PATCH some fields."""
        return await self._t.json("PATCH", f"/api/v1/devices/{device_id}", json=fields)

    async def delete(self, device_id: str) -> None:
        """Delete a device with no runs in flight."""
        await self._t.json("DELETE", f"/api/v1/devices/{device_id}")

    async def test(self, device_id: str) -> dict:
        """Connect and run `true`: {"ok", "latency_ms", "host_key", "error"}."""
        return await self._t.json("POST", f"/api/v1/devices/{device_id}/test", timeout=self._t.timeout + 30)


class AsyncClient:
    """Async SDK entry point: `client.agent_runs`, `client.devices`; use `async with` or `await aclose()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, http: httpx.AsyncClient | None = None, backoff_base: float = 0.5):
        base_url = base_url or os.environ.get("AGENTRUNS_API_URL") or DEFAULT_URL
        api_key = api_key if api_key is not None else os.environ.get("AGENTRUNS_API_KEY")
        self._transport = AsyncTransport(base_url, api_key, timeout, max_retries, http, backoff_base)
        self.base_url = self._transport.base_url
        self.agent_runs = AsyncAgentRuns(self._transport)
        self.devices = AsyncDevices(self._transport)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
