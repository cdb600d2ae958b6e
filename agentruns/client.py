"""Python SDK for the agentruns REST API.

    from agentruns.client import Client
    client = Client()  # AGENTRUNS_API_URL / AGENTRUNS_API_KEY
    run = client.agent_runs.run(prompt="fix the tests", sandbox_id="box-1", provider="claude-code")

Runs, devices and webhooks come back as plain dicts (the API's JSON). Errors raise AgentrunsError subclasses.
This module is the blocking shell around the SDK's I/O-free core (agentruns._sdk_*, agentruns.client_stream);
agentruns.client_async is its asyncio twin with the same methods.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
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
from agentruns.client_errors import (
    AgentrunsError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from agentruns.client_stream import stream
from agentruns.vocabulary import TERMINAL

__all__ = ["Client", "AgentrunsError", "BadRequest", "Unauthorized", "PermissionDenied", "NotFound", "Conflict",
           "ValidationFailed", "RateLimited", "ServerError", "ConnectionFailed", "WaitTimeout", "TERMINAL"]


def _request(http: httpx.Client, call: Call) -> httpx.Request:
    return http.build_request(call.method, call.path, params=call.params, json=call.json, headers=call.headers,
                              timeout=call.httpx_timeout())


class _Exchange:
    """Performs one flow's instructions on an httpx.Client: the only I/O of the sync SDK."""

    def __init__(self, http: httpx.Client):
        self.http = http
        self.response: httpx.Response | None = None  # the open stream, if any
        self.lines: Iterator[str] = iter(())

    def perform(self, instruction: Any) -> Any:
        """Carry out one instruction (see agentruns._sdk_protocol) and return its result."""
        match instruction:
            case Send(call):
                return self.http.send(_request(self.http, call))
            case Open(call):
                self.close()
                self.response = self.http.send(_request(self.http, call), stream=True)
                self.lines = self.response.iter_lines()
                return self.response
            case ReadLine():
                line = next(self.lines, None)
                if line is None:
                    self.close()
                return line
            case ReadBody():
                resp = self.response
                assert resp is not None, "ReadBody without Open"
                resp.read()
                self.close()
                return resp
            case Close():
                self.close()
            case Sleep(seconds):
                time.sleep(seconds)
            case _:
                raise TypeError(f"not an instruction: {instruction!r}")
        return None

    def advance(self, flow: Flow[Any]) -> tuple[bool, Any]:
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
                reply, error = self.perform(instruction), None
            except httpx.TransportError as exc:
                self.close()
                reply, error = None, exc

    def close(self) -> None:
        """Drop the open stream, if any."""
        if self.response is not None:
            self.response.close()
            self.response, self.lines = None, iter(())


def run_flow(http: httpx.Client, flow: Flow[T]) -> T:
    """Perform a flow that emits nothing; its result."""
    exchange = _Exchange(http)
    try:
        emitted, value = exchange.advance(flow)
        assert not emitted, "this flow emits items: iterate it"
        return value
    finally:
        exchange.close()
        flow.close()


def iterate_flow(http: httpx.Client, flow: Flow[Any]) -> Iterator[Any]:
    """Perform a flow, yielding what it emits."""
    exchange = _Exchange(http)
    try:
        while True:
            emitted, item = exchange.advance(flow)
            if not emitted:
                return
            yield item
    finally:  # also when the caller stops iterating early: the open stream is released
        exchange.close()
        flow.close()


class AgentRuns:
    """`client.agent_runs`: create, run, get, wait, page, list, cancel, events, events_page, stream."""

    def __init__(self, flows: RunFlows, http: httpx.Client):
        self._flows, self._http = flows, http

    def create(self, *, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
               computer_id: str | None = None, target_kind: str | None = None, provider: str | None = None,
               command: str | None = None, runtime_command: str | None = None, model: str | None = None,
               cwd: str | None = None, timeout: int | None = None, metadata: dict | None = None,
               env: dict[str, str] | None = None, wait: bool | int | None = None, webhook_url: str | None = None,
               idempotency_key: str | None = None) -> dict:
        """Create a run (status queued). A fresh Idempotency-Key is generated when none is given, and the same
        key goes with every retry, so a retried create never makes a second run. `webhook_url` also sends the
        run's events there, signed with the per-run secret (see `webhooks.rotate_secret("per-run")`)."""
        body = run_body(prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id,
                        target_kind=target_kind, provider=provider, command=command, runtime_command=runtime_command,
                        model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env, wait=wait,
                        webhook_url=webhook_url)
        return run_flow(self._http, self._flows.create(body, idempotency_key))

    def run(self, *, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
            computer_id: str | None = None, target_kind: str | None = None, provider: str | None = None,
            command: str | None = None, runtime_command: str | None = None, model: str | None = None,
            cwd: str | None = None, timeout: int | None = None, metadata: dict | None = None,
            env: dict[str, str] | None = None, wait: bool | int | None = None, webhook_url: str | None = None,
            idempotency_key: str | None = None, wait_timeout: float | None = None) -> dict:
        """Create a run and wait until it ends; returns the finished run (WaitTimeout after `wait_timeout`)."""
        body = run_body(prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id,
                        target_kind=target_kind, provider=provider, command=command, runtime_command=runtime_command,
                        model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env, wait=wait,
                        webhook_url=webhook_url)
        return run_flow(self._http, self._flows.run(body, idempotency_key, wait_timeout))

    def get(self, run_id: str, wait: int | None = None) -> dict:
        """The full run; `wait=SECONDS` long-polls (server maximum 600) until it is terminal."""
        return run_flow(self._http, self._flows.get(run_id, wait))

    def wait(self, run_id: str, timeout: float | None = None, poll_wait: int = 60) -> dict:
        """Long-poll until the run is terminal; WaitTimeout (carrying the run) after `timeout` seconds."""
        return run_flow(self._http, self._flows.wait(run_id, timeout, poll_wait))

    def page(self, *, cursor: str | None = None, limit: int | None = None, metadata: dict | None = None,
             **filters: Any) -> dict:
        """One page: {"data": [...], "next_cursor": str | None}."""
        return run_flow(self._http, self._flows.page(cursor, limit, metadata, filters))

    def list(self, *, limit: int | None = None, metadata: dict | None = None, **filters: Any) -> Iterator[dict]:
        """Every matching run, newest first, following next_cursor (`limit` is the page size, 1 to 100).
        Filters: target_id, target_kind, sandbox_id, computer_id, status, provider, created_after,
        created_before, cursor, metadata={"key": "value"}."""
        return iterate_flow(self._http, self._flows.list(limit, metadata, filters))

    def cancel(self, run_id: str) -> dict:
        """Cancel: a queued run ends at once; a running run gets cancel_requested. 409 (Conflict) if finished."""
        return run_flow(self._http, self._flows.cancel(run_id))

    def events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> Rows:
        """The event log after `after_seq` (all pages), status and note events' data decoded to dicts."""
        return run_flow(self._http, self._flows.events(run_id, after_seq, limit))

    def events_page(self, run_id: str, after_seq: int = 0, limit: int = 500) -> Rows:
        """One page of events after `after_seq`."""
        return run_flow(self._http, self._flows.events_page(run_id, after_seq, limit))

    def stream(self, run_id: str, after_seq: int = 0, *, transport: str = "auto",
               poll_interval: float = 0.5) -> Iterator[dict]:
        """Yield the run's events live until its terminal status event. `transport`: "auto" (SSE, falling back
        to polling when the server or a proxy does not stream), "sse" or "poll". A dropped SSE connection is
        resumed with Last-Event-ID."""
        return iterate_flow(self._http, stream(self._flows, run_id, after_seq, transport, poll_interval))


class Devices:
    """`client.devices`: the tenant's sandboxes and computers."""

    def __init__(self, flows: DeviceFlows, http: httpx.Client):
        self._flows, self._http = flows, http

    def create(self, **fields: Any) -> dict:
        """Register a device (id, kind, driver, host, port, username, private_key, host_key, ...)."""
        return run_flow(self._http, self._flows.create(fields))

    def list(self) -> Rows:
        """All devices of the tenant."""
        return run_flow(self._http, self._flows.list())

    def get(self, device_id: str) -> dict:
        """One device (secrets are never returned: see has_private_key, env_names)."""
        return run_flow(self._http, self._flows.get(device_id))

    def update(self, device_id: str, **fields: Any) -> dict:
        """PATCH some fields; a secret given as None is removed."""
        return run_flow(self._http, self._flows.update(device_id, fields))

    def delete(self, device_id: str) -> None:
        """Delete a device with no runs in flight (Conflict otherwise)."""
        run_flow(self._http, self._flows.delete(device_id))

    def test(self, device_id: str) -> dict:
        """Open a connection and run `true`: {"ok", "latency_ms", "host_key", "error"}."""
        return run_flow(self._http, self._flows.test(device_id))


class Webhooks:
    """`client.webhooks`: endpoints that receive run events as signed POSTs, and their delivery log.

        hook = client.webhooks.create("https://example.com/agentruns", events=["run.succeeded", "run.failed"])
        store(hook["secret"])  # shown only in this answer (and in rotate_secret's)

    A receiver checks each POST with agentruns.webhooks.verify(body, headers["Agentruns-Signature"], secret).
    The id "per-run" names the tenant's per-run endpoint, whose secret signs the events sent to runs' own
    `webhook_url`. Creates, rotations and redeliveries are resent only when the request surely never left.
    """

    def __init__(self, flows: WebhookFlows, http: httpx.Client):
        self._flows, self._http = flows, http

    def create(self, url: str, *, events: list[str] | None = None, filters: dict | None = None,
               description: str | None = None, enabled: bool | None = None) -> dict:
        """Subscribe `url` to run events: `events` from run.queued, run.started, run.succeeded, run.failed,
        run.canceled, or run.* for all (the default); `filters` {"target_id", "provider", "metadata": {k: v}}
        keeps only matching runs. The answer's "secret" (whsec_...) is shown only this once."""
        body = webhook_body(url=url, events=events, filters=filters, description=description, enabled=enabled)
        return run_flow(self._http, self._flows.create(body))

    def list(self) -> Rows:
        """The tenant's endpoints, oldest first (without secrets; the per-run endpoint is get("per-run"))."""
        return run_flow(self._http, self._flows.list())

    def get(self, webhook_id: str) -> dict:
        """One endpoint (NotFound if there is none; "per-run" is the per-run endpoint)."""
        return run_flow(self._http, self._flows.get(webhook_id))

    def update(self, webhook_id: str, **fields: Any) -> dict:
        """PATCH some of url, events, filters, description, enabled. `filters` replaces all the filters;
        `enabled=True` re-enables an endpoint the server disabled after failing for too long."""
        return run_flow(self._http, self._flows.update(webhook_id, fields))

    def delete(self, webhook_id: str) -> None:
        """Delete an endpoint; its pending deliveries are dropped."""
        run_flow(self._http, self._flows.delete(webhook_id))

    def rotate_secret(self, webhook_id: str) -> dict:
        """A new secret, in the answer's "secret" only; the old one keeps signing beside it until
        previous_secret_expires_at. "per-run" creates the per-run endpoint if needed. Not resent after a
        request that may have arrived (a second rotation would replace the secret the first returned)."""
        return run_flow(self._http, self._flows.rotate_secret(webhook_id))

    def deliveries_page(self, webhook_id: str, *, cursor: str | None = None, state: str | None = None,
                        run_id: str | None = None, event_id: str | None = None, limit: int | None = None) -> dict:
        """One page of deliveries, newest first: {"data": [...], "next_cursor": str | None}."""
        filters = {"state": state, "run_id": run_id, "event_id": event_id}
        return run_flow(self._http, self._flows.deliveries_page(webhook_id, cursor, limit, filters))

    def deliveries(self, webhook_id: str, *, state: str | None = None, run_id: str | None = None,
                   event_id: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> Iterator[dict]:
        """Every delivery of the endpoint, newest first, following next_cursor (`limit` is the page size, 1 to
        200; `cursor` starts from a page's next_cursor). Each has its state (pending, delivered, failed),
        attempts and attempt_log."""
        filters = {"state": state, "run_id": run_id, "event_id": event_id, "cursor": cursor}
        return iterate_flow(self._http, self._flows.deliveries(webhook_id, limit, filters))

    def redeliver(self, webhook_id: str, delivery_id: str) -> dict:
        """Send a delivery's event again: returns the new (pending) delivery, which has the same event_id."""
        return run_flow(self._http, self._flows.redeliver(webhook_id, delivery_id))


class ApiKeys:
    """`client.keys`: the tenant's API keys. A key's full value is shown only when it is made (create, rotate).

        new = client.keys.create(name="ci", expires_in_days=90)
        store(new["key"])
        client.keys.rotate(new["prefix"])  # a new key; the old one is refused from now on

    A tenant key creates only tenant keys and cannot revoke or rotate an operator key (PermissionDenied).
    """

    def __init__(self, flows: KeyFlows, http: httpx.Client):
        self._flows, self._http = flows, http

    def list(self) -> Rows:
        """The tenant's keys, newest first, revoked and expired ones included (prefixes, never secrets)."""
        return run_flow(self._http, self._flows.list())

    def get(self, prefix: str) -> dict:
        """One key, by its prefix."""
        return run_flow(self._http, self._flows.get(prefix))

    def create(self, *, name: str | None = None, expires_in_days: int | None = None,
               expires_at: datetime | str | None = None) -> dict:
        """A new tenant key (optionally expiring); the answer's "key" is shown only this once."""
        body = key_body(name=name, expires_in_days=expires_in_days, expires_at=expires_at)
        return run_flow(self._http, self._flows.create(body))

    def revoke(self, prefix: str) -> dict:
        """Revoke a key: refused by the API from the next request on (a key may revoke itself)."""
        return run_flow(self._http, self._flows.revoke(prefix))

    def rotate(self, prefix: str) -> dict:
        """A new key with the same name, role and expiry (its "key" shown only now); the old one is revoked."""
        return run_flow(self._http, self._flows.rotate(prefix))


class Admin:
    """`client.admin`: the operator's endpoints; they need an operator key (a tenant key: PermissionDenied).

        stats = client.admin.stats()
        for pool in stats["pools"]:
            print(pool["pool"], pool["queued_runs"], pool["oldest_queued_seconds"], pool["live_workers"])
    """

    def __init__(self, flows: AdminFlows, http: httpx.Client):
        self._flows, self._http = flows, http

    def stats(self, pool: str | None = None) -> dict:
        """The fleet, all tenants: {"pools", "devices", "workers"} (of one pool when given), as GET
        /api/v1/admin/stats answers it."""
        return run_flow(self._http, self._flows.stats(pool))


class Client:
    """The SDK entry point: `client.agent_runs`, `client.devices`, `client.webhooks`, `client.keys` and
    `client.admin` (operator keys only)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, http: httpx.Client | None = None, backoff_base: float = 0.5):
        self.config = Config.resolve(base_url, api_key, timeout, max_retries, backoff_base)
        self.base_url = self.config.base_url
        self._http = http or httpx.Client(base_url=self.base_url)
        self._http.headers.update(self.config.headers())
        self.agent_runs = AgentRuns(RunFlows(self.config), self._http)
        self.devices = Devices(DeviceFlows(self.config), self._http)
        self.webhooks = Webhooks(WebhookFlows(self.config), self._http)
        self.keys = ApiKeys(KeyFlows(self.config), self._http)
        self.admin = Admin(AdminFlows(self.config), self._http)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
