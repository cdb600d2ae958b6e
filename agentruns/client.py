"""Python SDK for the agentruns REST API.

    from agentruns.client import Client
    client = Client()  # AGENTRUNS_API_URL / AGENTRUNS_API_KEY
    run = client.agent_runs.run(prompt="fix the tests", sandbox_id="box-1", provider="claude-code")

Runs and devices come back as plain dicts (the API's JSON). Errors raise AgentrunsError subclasses.
"""
from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from agentruns.client_errors import (AgentrunsError, BadRequest, Conflict, ConnectionFailed, NotFound,
                                     PermissionDenied, RateLimited, ServerError, Unauthorized, ValidationFailed,
                                     WaitTimeout, connection_error, error_from_response, parse_retry_after)
from agentruns.client_sse import TERMINAL, normalize_event
from agentruns.client_stream import stream_events

__all__ = ["Client", "AgentrunsError", "BadRequest", "Unauthorized", "PermissionDenied", "NotFound", "Conflict",
           "ValidationFailed", "RateLimited", "ServerError", "ConnectionFailed", "WaitTimeout", "TERMINAL"]

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 60.0
# Transport errors after which a request may be sent again. Protocol misuse on our side is not among them.
_RETRYABLE_EXC = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
# Errors where the request surely never reached the application: safe to resend for any method.
_NOT_SENT_EXC = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentruns")
    except Exception:  # noqa: BLE001 - an uninstalled checkout still works
        return "0"


def backoff_delay(attempt: int, base: float = 0.5, retry_after: float | None = None) -> float:
    """Seconds to sleep before retry number `attempt` (0-based): Retry-After if given, else capped exponential
    backoff with "equal jitter" so a fleet of clients does not retry in lockstep."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER) + random.uniform(0, 0.1)
    ceiling = min(MAX_BACKOFF, base * 2 ** attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def default_headers(api_key: str | None) -> dict[str, str]:
    """Headers every request carries."""
    headers = {"User-Agent": f"agentruns-python/{_version()}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def classify(retry: str, request_id: str, resp: httpx.Response | None = None,
             exc: Exception | None = None) -> tuple[AgentrunsError | None, bool, float | None]:
    """(error or None for success, may it be resent, Retry-After seconds) for one attempt.
    `retry`: "always" (GETs, create with its Idempotency-Key) resends after any transport error, 5xx or 429;
    "safe" only when the request never reached the server, or on 429 (refused before any work)."""
    if exc is not None:
        sendable = _NOT_SENT_EXC if retry == "safe" else _RETRYABLE_EXC
        return connection_error(exc, request_id), retry != "never" and isinstance(exc, sendable), None
    assert resp is not None
    if resp.status_code < 400:
        return None, False, None
    err = error_from_response(resp)
    retryable = resp.status_code == 429 or (retry == "always" and (
        resp.status_code >= 500 or err.code == "idempotency_key_in_use"))
    return err, retry != "never" and retryable, parse_retry_after(resp.headers.get("retry-after"))


def decode_data(resp: httpx.Response, method: str, path: str) -> Any:
    """The body's `data` (None for 204)."""
    if resp.status_code == 204 or not resp.content:
        return None
    try:
        return resp.json()["data"]
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"unexpected response body from {method} {path}", code="bad_response",
                          status=resp.status_code, request_id=resp.headers.get("x-request-id")) from None


class Transport:
    """httpx plus the retry policy and error mapping shared by every resource."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_retries: int,
                 http: httpx.Client | None = None, backoff_base: float = 0.5):
        self.base_url = base_url.rstrip("/").removesuffix("/api/v1")
        self.timeout, self.max_retries, self.backoff_base = timeout, max_retries, backoff_base
        self.http = http or httpx.Client(base_url=self.base_url,
                                         timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self.http.headers.update(default_headers(api_key))

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                retry: str = "safe") -> httpx.Response:
        """Send with retries (see `classify` for the policy)."""
        headers = {"X-Request-Id": uuid.uuid4().hex, **(headers or {})}  # one id for every attempt
        attempt = 0
        while True:
            resp = None
            try:
                resp = self.http.request(method, path, params=params, json=json, headers=headers,
                                         timeout=self.timeout if timeout is None else timeout)
                err, retryable, retry_after = classify(retry, headers["X-Request-Id"], resp=resp)
            except httpx.TransportError as exc:
                err, retryable, retry_after = classify(retry, headers["X-Request-Id"], exc=exc)
            if err is None:
                return resp
            if not retryable or attempt >= self.max_retries:
                raise err
            time.sleep(backoff_delay(attempt, self.backoff_base, retry_after))
            attempt += 1

    def json(self, method: str, path: str, **kwargs) -> Any:
        """`request` and decode the body's `data` (None for 204)."""
        return decode_data(self.request(method, path, **kwargs), method, path)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _query_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def create_options(body: dict, idempotency_key: str | None, timeout: float) -> dict[str, Any]:
    """Request options for POST /agent-runs: the body, a (generated) Idempotency-Key, a timeout covering `wait`."""
    wait = body.get("wait")
    wait_s = 60 if wait is True else int(wait or 0)
    return dict(json=body, headers={"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"},
                timeout=timeout + wait_s, retry="always")


def list_params(filters: dict, metadata: dict | None = None) -> dict[str, Any]:
    """Query parameters for GET /agent-runs: `metadata={"k": "v"}` becomes `metadata[k]=v`."""
    params = {k: _query_value(v) for k, v in filters.items() if v is not None}
    for key, value in (metadata or {}).items():
        params[f"metadata[{key}]"] = _query_value(value)
    return params


class AgentRuns:
    """`client.agent_runs`: create, run, get, wait, list, cancel, events, stream."""

    def __init__(self, transport: Transport):
        self._t = transport

    def create(self, *, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
               computer_id: str | None = None, target_kind: str | None = None, provider: str | None = None,
               command: str | None = None, runtime_command: str | None = None, model: str | None = None,
               cwd: str | None = None, timeout: int | None = None, metadata: dict | None = None,
               env: dict[str, str] | None = None, wait: bool | int | None = None,
               idempotency_key: str | None = None) -> dict:
        """Create a run (status queued). A fresh Idempotency-Key is generated when none is given, and the same
        key goes with every retry, so a retried create never makes a second run."""
        body = _drop_none(dict(prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id,
                               target_kind=target_kind, provider=provider, command=command or runtime_command,
                               model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env, wait=wait))
        return self._t.json("POST", "/api/v1/agent-runs", **create_options(body, idempotency_key, self._t.timeout))

    def get(self, run_id: str, wait: int | None = None) -> dict:
        """The full run; `wait=SECONDS` long-polls (server maximum 600) until it is terminal."""
        params = {"wait": int(wait)} if wait else None
        return self._t.json("GET", f"/api/v1/agent-runs/{run_id}", params=params,
                            timeout=self._t.timeout + (wait or 0), retry="always")

    def wait(self, run_id: str, timeout: float | None = None, poll_wait: int = 60) -> dict:
        """Long-poll until the run is terminal; WaitTimeout (carrying the run) after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = poll_wait if left is None else max(0, min(poll_wait, int(left + 0.999)))
            run = self.get(run_id, wait=step)
            if run["status"] in TERMINAL:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(run, timeout)

    def run(self, *, wait_timeout: float | None = None, **fields) -> dict:
        """Create a run and wait until it ends; returns the finished run (see `create` for the fields)."""
        created = self.create(**fields)
        if created["status"] in TERMINAL:
            return created
        return self.wait(created["id"], timeout=wait_timeout)

    def page(self, *, cursor: str | None = None, limit: int | None = None, metadata: dict | None = None,
             **filters) -> dict:
        """One page: {"data": [...], "next_cursor": str | None}."""
        params = list_params({**filters, "cursor": cursor, "limit": limit}, metadata)
        resp = self._t.request("GET", "/api/v1/agent-runs", params=params, retry="always")
        return resp.json()

    def list(self, *, limit: int | None = None, metadata: dict | None = None, **filters) -> Iterator[dict]:
        """Every matching run, newest first, following next_cursor (`limit` is the page size, 1 to 100).
        Filters: target_id, target_kind, sandbox_id, computer_id, status, provider, created_after,
        created_before, metadata={"key": "value"}."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.page(cursor=cursor, limit=limit, metadata=metadata, **filters)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, run_id: str) -> dict:
        """Cancel: a queued run ends at once; a running run gets cancel_requested. 409 (Conflict) if finished."""
        # Cancelling twice changes nothing, yet only resend when the first attempt surely did not arrive:
        # a resent cancel of a run that finished meanwhile would turn into a confusing 409.
        return self._t.json("POST", f"/api/v1/agent-runs/{run_id}/cancel", retry="safe")

    def events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict]:
        """The event log after `after_seq` (all pages), status events' data decoded to dicts."""
        out: list[dict] = []
        while True:
            rows = self.events_page(run_id, after_seq, limit)
            out.extend(rows)
            if len(rows) < limit:
                return out
            after_seq = rows[-1]["seq"]

    def events_page(self, run_id: str, after_seq: int = 0, limit: int = 500) -> list[dict]:
        """One page of events after `after_seq`."""
        rows = self._t.json("GET", f"/api/v1/agent-runs/{run_id}/events",
                            params={"after_seq": after_seq, "limit": limit}, retry="always")
        return [normalize_event(e) for e in rows]

    def stream(self, run_id: str, after_seq: int = 0, *, transport: str = "auto",
               poll_interval: float = 0.5) -> Iterator[dict]:
        """Yield the run's events live until its terminal status event. `transport`: "auto" (SSE, falling back
        to polling when the server or a proxy does not stream), "sse" or "poll". A dropped SSE connection is
        resumed with Last-Event-ID."""
        return stream_events(self, self._t, run_id, after_seq, transport, poll_interval)


class Devices:
    """`client.devices`: the tenant's sandboxes and computers."""

    def __init__(self, transport: Transport):
        self._t = transport

    def create(self, **fields) -> dict:
        """Register a device (id, kind, driver, host, port, username, private_key, host_key, ...)."""
        return self._t.json("POST", "/api/v1/devices", json=_drop_none(fields))

    def list(self) -> list[dict]:
        """All devices of the tenant."""
        return self._t.json("GET", "/api/v1/devices", retry="always")

    def get(self, device_id: str) -> dict:
        """One device (secrets are never returned: see has_private_key, env_names)."""
        return self._t.json("GET", f"/api/v1/devices/{device_id}", retry="always")

    def update(self, device_id: str, **fields) -> dict:
        """PATCH some fields; a secret given as None is removed."""
        return self._t.json("PATCH", f"/api/v1/devices/{device_id}", json=fields)

    def delete(self, device_id: str) -> None:
        """Delete a device with no runs in flight (Conflict otherwise)."""
        self._t.json("DELETE", f"/api/v1/devices/{device_id}")

    def test(self, device_id: str) -> dict:
        """Open a connection and run `true`: {"ok", "latency_ms", "host_key", "error"}."""
        return self._t.json("POST", f"/api/v1/devices/{device_id}/test", timeout=self._t.timeout + 30)


class Client:
    """The SDK entry point: `client.agent_runs` and `client.devices`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, *, http: httpx.Client | None = None, backoff_base: float = 0.5):
        base_url = base_url or os.environ.get("AGENTRUNS_API_URL") or DEFAULT_URL
        api_key = api_key if api_key is not None else os.environ.get("AGENTRUNS_API_KEY")
        self._transport = Transport(base_url, api_key, timeout, max_retries, http, backoff_base)
        self.base_url = self._transport.base_url
        self.agent_runs = AgentRuns(self._transport)
        self.devices = Devices(self._transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
