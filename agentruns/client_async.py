"""The asyncio twin of agentruns.client: the same methods and signatures on httpx.AsyncClient, performing
the same I/O-free flows (agentruns._sdk_*, agentruns.client_stream), so retries, errors and streaming
behave identically.

    async with AsyncClient() as client:
        run = await client.agent_runs.run(prompt="...", sandbox_id="box-1")
        async for event in client.agent_runs.stream(run["id"]): ...
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx

from agentruns._sdk_protocol import Call, Close, Config, Emit, Flow, Open, ReadBody, ReadLine, Send, Sleep, T
from agentruns._sdk_resources import (
    AdminFlows,
    DeviceFlows,
    KeyFlows,
    Rows,
    RunFlows,
    WebhookFlows,
    key_body,
    run_body,
    webhook_body,
)
from agentruns.client_stream import stream

__all__ = ["AsyncClient"]


def _request(http: httpx.AsyncClient, call: Call) -> httpx.Request:
    return http.build_request(call.method, call.path, params=call.params, json=call.json, headers=call.headers,
                              timeout=call.httpx_timeout())


class _AsyncExchange:
    """Performs one flow's instructions on an httpx.AsyncClient: the only I/O of the async SDK."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http
        self.response: httpx.Response | None = None  # the open stream, if any
        self.lines: AsyncIterator[str] | None = None

    async def perform(self, instruction: Any) -> Any:
        """Carry out one instruction (see agentruns._sdk_protocol) and return its result."""
        match instruction:
            case Send(call):
                return await self.http.send(_request(self.http, call))
            case Open(call):
                await self.close()
                self.response = await self.http.send(_request(self.http, call), stream=True)
                self.lines = self.response.aiter_lines()
                return self.response
            case ReadLine():
                line = await anext(self.lines, None) if self.lines is not None else None
                if line is None:
                    await self.close()
                return line
            case ReadBody():
                resp = self.response
                assert resp is not None, "ReadBody without Open"
                await resp.aread()
                await self.close()
                return resp
            case Close():
                await self.close()
            case Sleep(seconds):
                await asyncio.sleep(seconds)
            case _:
                raise TypeError(f"not an instruction: {instruction!r}")
        return None

    async def advance(self, flow: Flow[Any]) -> tuple[bool, Any]:
        """Run `flow` to its next Emit, (True, item), or to its end, (False, result)."""
        reply: Any = None
        error: httpx.TransportError | None = None
        while True:
            try:
                instruction = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return False, stop.value
            if isinstance(instruction, Emit):
                return True, instruction.item
            try:
                reply, error = await self.perform(instruction), None
            except httpx.TransportError as exc:
                await self.close()
                reply, error = None, exc

    async def close(self) -> None:
        """Drop the open stream, if any."""
        if self.response is not None:
            await self.response.aclose()
            self.response, self.lines = None, None


async def run_flow(http: httpx.AsyncClient, flow: Flow[T]) -> T:
    """Perform a flow that emits nothing; its result."""
    exchange = _AsyncExchange(http)
    try:
        emitted, value = await exchange.advance(flow)
        assert not emitted, "this flow emits items: iterate it"
        return value
    finally:
        await exchange.close()
        flow.close()


async def iterate_flow(http: httpx.AsyncClient, flow: Flow[Any]) -> AsyncIterator[Any]:
    """Perform a flow, yielding what it emits."""
    exchange = _AsyncExchange(http)
    try:
        while True:
            emitted, item = await exchange.advance(flow)
            if not emitted:
                return
            yield item
    finally:  # also when the caller stops iterating early (aclose): the open stream is released
        await exchange.close()
        flow.close()


class AsyncAgentRuns:
    """`client.agent_runs` of AsyncClient (see agentruns.client.AgentRuns: the same methods, awaited)."""

    def __init__(self, flows: RunFlows, http: httpx.AsyncClient):
        self._flows, self._http = flows, http

    async def create(self, *, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
                     computer_id: str | None = None, target_kind: str | None = None, provider: str | None = None,
                     command: str | None = None, runtime_command: str | None = None, model: str | None = None,
                     cwd: str | None = None, timeout: int | None = None, metadata: dict | None = None,
                     env: dict[str, str] | None = None, wait: bool | int | None = None, webhook_url: str | None = None,
                     idempotency_key: str | None = None) -> dict:
        """Create a run; an Idempotency-Key is generated when absent and reused by every retry. `webhook_url`
        also sends the run's events there, signed with the per-run secret."""
        body = run_body(prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id,
                        target_kind=target_kind, provider=provider, command=command, runtime_command=runtime_command,
                        model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env, wait=wait,
                        webhook_url=webhook_url)
        return await run_flow(self._http, self._flows.create(body, idempotency_key))

    async def run(self, *, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
                  computer_id: str | None = None, target_kind: str | None = None, provider: str | None = None,
                  command: str | None = None, runtime_command: str | None = None, model: str | None = None,
                  cwd: str | None = None, timeout: int | None = None, metadata: dict | None = None,
                  env: dict[str, str] | None = None, wait: bool | int | None = None, webhook_url: str | None = None,
                  idempotency_key: str | None = None, wait_timeout: float | None = None) -> dict:
        """Create a run and wait until it ends (WaitTimeout after `wait_timeout`)."""
        body = run_body(prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id,
                        target_kind=target_kind, provider=provider, command=command, runtime_command=runtime_command,
                        model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env, wait=wait,
                        webhook_url=webhook_url)
        return await run_flow(self._http, self._flows.run(body, idempotency_key, wait_timeout))

    async def get(self, run_id: str, wait: int | None = None) -> dict:
        """The full run; `wait=SECONDS` long-polls until it is terminal."""
        return await run_flow(self._http, self._flows.get(run_id, wait))

    async def wait(self, run_id: str, timeout: float | None = None, poll_wait: int = 60) -> dict:
        """Long-poll until terminal; WaitTimeout after `timeout` seconds."""
        return await run_flow(self._http, self._flows.wait(run_id, timeout, poll_wait))

    async def page(self, *, cursor: str | None = None, limit: int | None = None, metadata: dict | None = None,
                   **filters: Any) -> dict:
        """One page: {"data": [...], "next_cursor": ...}."""
        return await run_flow(self._http, self._flows.page(cursor, limit, metadata, filters))

    def list(self, *, limit: int | None = None, metadata: dict | None = None, **filters: Any) -> AsyncIterator[dict]:
        """Every matching run, newest first, following next_cursor (`async for`)."""
        return iterate_flow(self._http, self._flows.list(limit, metadata, filters))

    async def cancel(self, run_id: str) -> dict:
        """Cancel a run (Conflict if it already finished)."""
        return await run_flow(self._http, self._flows.cancel(run_id))

    async def events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> Rows:
        """The whole event log after `after_seq`."""
        return await run_flow(self._http, self._flows.events(run_id, after_seq, limit))

    async def events_page(self, run_id: str, after_seq: int = 0, limit: int = 500) -> Rows:
        """One page of events after `after_seq`."""
        return await run_flow(self._http, self._flows.events_page(run_id, after_seq, limit))

    def stream(self, run_id: str, after_seq: int = 0, *, transport: str = "auto",
               poll_interval: float = 0.5) -> AsyncIterator[dict]:
        """Live events until the terminal status (`async for`): SSE with Last-Event-ID resume, or polling."""
        return iterate_flow(self._http, stream(self._flows, run_id, after_seq, transport, poll_interval))


class AsyncDevices:
    """`client.devices` of AsyncClient."""

    def __init__(self, flows: DeviceFlows, http: httpx.AsyncClient):
        self._flows, self._http = flows, http

    async def create(self, **fields: Any) -> dict:
        """Register a device."""
        return await run_flow(self._http, self._flows.create(fields))

    async def list(self) -> Rows:
        """All devices of the tenant."""
        return await run_flow(self._http, self._flows.list())

    async def get(self, device_id: str) -> dict:
        """One device."""
        return await run_flow(self._http, self._flows.get(device_id))

    async def update(self, device_id: str, **fields: Any) -> dict:
        """PATCH some fields; a secret given as None is removed."""
        return await run_flow(self._http, self._flows.update(device_id, fields))

    async def delete(self, device_id: str) -> None:
        """Delete a device with no runs in flight."""
        await run_flow(self._http, self._flows.delete(device_id))

    async def test(self, device_id: str) -> dict:
        """Connect and run `true`: {"ok", "latency_ms", "host_key", "error"}."""
        return await run_flow(self._http, self._flows.test(device_id))


class AsyncWebhooks:
    """`client.webhooks` of AsyncClient (see agentruns.client.Webhooks: the same methods, awaited)."""

    def __init__(self, flows: WebhookFlows, http: httpx.AsyncClient):
        self._flows, self._http = flows, http

    async def create(self, url: str, *, events: list[str] | None = None, filters: dict | None = None,
                     description: str | None = None, enabled: bool | None = None) -> dict:
        """Subscribe `url` to run events (default run.*); the answer's "secret" is shown only this once."""
        body = webhook_body(url=url, events=events, filters=filters, description=description, enabled=enabled)
        return await run_flow(self._http, self._flows.create(body))

    async def list(self) -> Rows:
        """The tenant's endpoints, oldest first."""
        return await run_flow(self._http, self._flows.list())

    async def get(self, webhook_id: str) -> dict:
        """One endpoint ("per-run" is the per-run endpoint)."""
        return await run_flow(self._http, self._flows.get(webhook_id))

    async def update(self, webhook_id: str, **fields: Any) -> dict:
        """PATCH some of url, events, filters (replaced whole), description, enabled."""
        return await run_flow(self._http, self._flows.update(webhook_id, fields))

    async def delete(self, webhook_id: str) -> None:
        """Delete an endpoint; its pending deliveries are dropped."""
        await run_flow(self._http, self._flows.delete(webhook_id))

    async def rotate_secret(self, webhook_id: str) -> dict:
        """A new secret (shown only in this answer); the old one signs too until previous_secret_expires_at."""
        return await run_flow(self._http, self._flows.rotate_secret(webhook_id))

    async def deliveries_page(self, webhook_id: str, *, cursor: str | None = None, state: str | None = None,
                              run_id: str | None = None, event_id: str | None = None,
                              limit: int | None = None) -> dict:
        """One page of deliveries, newest first: {"data": [...], "next_cursor": ...}."""
        filters = {"state": state, "run_id": run_id, "event_id": event_id}
        return await run_flow(self._http, self._flows.deliveries_page(webhook_id, cursor, limit, filters))

    def deliveries(self, webhook_id: str, *, state: str | None = None, run_id: str | None = None,
                   event_id: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> AsyncIterator[dict]:
        """Every delivery of the endpoint, newest first, following next_cursor (`async for`)."""
        filters = {"state": state, "run_id": run_id, "event_id": event_id, "cursor": cursor}
        return iterate_flow(self._http, self._flows.deliveries(webhook_id, limit, filters))

    async def redeliver(self, webhook_id: str, delivery_id: str) -> dict:
        """Send a delivery's event again: the new delivery, with the same event_id."""
        return await run_flow(self._http, self._flows.redeliver(webhook_id, delivery_id))


class AsyncApiKeys:
    """`client.keys` of AsyncClient (see agentruns.client.ApiKeys: the same methods, awaited)."""

    def __init__(self, flows: KeyFlows, http: httpx.AsyncClient):
        self._flows, self._http = flows, http

    async def list(self) -> Rows:
        """The tenant's keys, newest first (prefixes, never secrets)."""
        return await run_flow(self._http, self._flows.list())

    async def get(self, prefix: str) -> dict:
        """One key, by its prefix."""
        return await run_flow(self._http, self._flows.get(prefix))

    async def create(self, *, name: str | None = None, expires_in_days: int | None = None,
                     expires_at: datetime | str | None = None) -> dict:
        """A new tenant key; the answer's "key" is shown only this once."""
        body = key_body(name=name, expires_in_days=expires_in_days, expires_at=expires_at)
        return await run_flow(self._http, self._flows.create(body))

    async def revoke(self, prefix: str) -> dict:
        """Revoke a key (a key may revoke itself)."""
        return await run_flow(self._http, self._flows.revoke(prefix))

    async def rotate(self, prefix: str) -> dict:
        """A new key with the same name, role and expiry; the old one is revoked."""
        return await run_flow(self._http, self._flows.rotate(prefix))


class AsyncAdmin:
    """`client.admin`: the operator's endpoints; they need an operator key (a tenant key: PermissionDenied).

        stats = await client.admin.stats()
        for pool in stats["pools"]:
            print(pool["pool"], pool["queued_runs"], pool["oldest_queued_seconds"], pool["live_workers"])
    """

    def __init__(self, flows: AdminFlows, http: httpx.AsyncClient):
        self._flows, self._http = flows, http

    async def stats(self, pool: str | None = None) -> dict:
        """The fleet, all tenants: {"pools", "devices", "workers"} (of one pool when given), as GET
        /api/v1/admin/stats answers it."""
        return await run_flow(self._http, self._flows.stats(pool))


class AsyncClient:
    """Async SDK entry point: `client.agent_runs`, `client.devices`, `client.webhooks`, `client.keys`,
    `client.admin`; use `async with` or `await aclose()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, http: httpx.AsyncClient | None = None, backoff_base: float = 0.5):
        self.config = Config.resolve(base_url, api_key, timeout, max_retries, backoff_base)
        self.base_url = self.config.base_url
        self._http = http or httpx.AsyncClient(base_url=self.base_url)
        self._http.headers.update(self.config.headers())
        self.agent_runs = AsyncAgentRuns(RunFlows(self.config), self._http)
        self.devices = AsyncDevices(DeviceFlows(self.config), self._http)
        self.webhooks = AsyncWebhooks(WebhookFlows(self.config), self._http)
        self.keys = AsyncApiKeys(KeyFlows(self.config), self._http)
        self.admin = AsyncAdmin(AdminFlows(self.config), self._http)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
