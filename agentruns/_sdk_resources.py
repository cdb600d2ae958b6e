"""The SDK's resources as I/O-free flows: what each method of `agent_runs`, `devices`, `webhooks`, `keys`
and `admin` sends, how it decodes the answers, and the loops (long-poll wait, pagination) around them. The shells in
agentruns.client and agentruns.client_async only perform the flows' instructions."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from agentruns._sdk_protocol import Call, Config, Emit, Flow
from agentruns._sdk_retry import decode_body, send, send_for_data
from agentruns.client_errors import WaitTimeout
from agentruns.client_sse import normalize_event
from agentruns.vocabulary import TERMINAL

RUNS = "/api/v1/agent-runs"
DEVICES = "/api/v1/devices"
WEBHOOKS = "/api/v1/webhooks"
KEYS = "/api/v1/keys"
ADMIN_STATS = "/api/v1/admin/stats"
# A create with `wait=True` lets the server hold the request this long before answering.
SERVER_WAIT_DEFAULT = 60
DEVICE_TEST_SECONDS = 30
# Spelled as an alias because the classes below (and the shells) have a method named `list`.
Rows = list[dict]


def drop_none(d: dict) -> dict:
    """`d` without its None values (absent fields take the server's defaults)."""
    return {k: v for k, v in d.items() if v is not None}


def _query_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def list_params(filters: dict, metadata: dict | None = None) -> dict[str, Any]:
    """Query parameters for GET /agent-runs: `metadata={"k": "v"}` becomes `metadata[k]=v`."""
    params = {k: _query_value(v) for k, v in filters.items() if v is not None}
    for key, value in (metadata or {}).items():
        params[f"metadata[{key}]"] = _query_value(value)
    return params


def run_body(*, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
             computer_id: str | None = None, target_kind: str | None = None, provider: str | None = None,
             command: str | None = None, runtime_command: str | None = None, model: str | None = None,
             cwd: str | None = None, timeout: int | None = None, metadata: dict | None = None,
             env: dict[str, str] | None = None, wait: bool | int | None = None,
             webhook_url: str | None = None) -> dict:
    """The JSON body of POST /agent-runs (`runtime_command` is the CLI's name for `command`)."""
    return drop_none(dict(prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id,
                          target_kind=target_kind, provider=provider, command=command or runtime_command,
                          model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env, wait=wait,
                          webhook_url=webhook_url))


class RunFlows:
    """Flows behind `client.agent_runs` (both shells)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def create(self, body: dict, idempotency_key: str | None = None) -> Flow[dict]:
        """POST a run with an Idempotency-Key (generated when None) that every retry reuses."""
        wait = body.get("wait")
        wait_s = SERVER_WAIT_DEFAULT if wait is True else int(wait or 0)
        call = Call("POST", RUNS, json=body, headers={"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"},
                    timeout=self.cfg.timeout + wait_s, retry="always")
        return send_for_data(self.cfg, call)

    def get(self, run_id: str, wait: int | None = None) -> Flow[dict]:
        """GET one run; `wait` long-polls on the server until it is terminal."""
        call = Call("GET", f"{RUNS}/{run_id}", params={"wait": int(wait)} if wait else None,
                    timeout=self.cfg.timeout + (wait or 0), retry="always")
        return send_for_data(self.cfg, call)

    def wait(self, run_id: str, timeout: float | None = None, poll_wait: int = 60,
             clock: Callable[[], float] = time.monotonic) -> Flow[dict]:
        """Long-poll in `poll_wait` slices until terminal; WaitTimeout (carrying the run) after `timeout`."""
        deadline = None if timeout is None else clock() + timeout
        while True:
            left = None if deadline is None else deadline - clock()
            step = poll_wait if left is None else max(0, min(poll_wait, int(left + 0.999)))
            run = yield from self.get(run_id, wait=step)
            if run["status"] in TERMINAL:
                return run
            if deadline is not None and clock() >= deadline:
                raise WaitTimeout(run, timeout or 0)

    def run(self, body: dict, idempotency_key: str | None = None, wait_timeout: float | None = None,
            clock: Callable[[], float] = time.monotonic) -> Flow[dict]:
        """Create, then wait unless the create already answered with a finished run."""
        created = yield from self.create(body, idempotency_key)
        if created["status"] in TERMINAL:
            return created
        return (yield from self.wait(created["id"], timeout=wait_timeout, clock=clock))

    def page(self, cursor: str | None, limit: int | None, metadata: dict | None, filters: dict) -> Flow[dict]:
        """One page of runs: {"data": [...], "next_cursor": str | None}."""
        call = Call("GET", RUNS, params=list_params({**filters, "cursor": cursor, "limit": limit}, metadata),
                    timeout=self.cfg.timeout, retry="always")
        return decode_body((yield from send(self.cfg, call)), call)

    def list(self, limit: int | None, metadata: dict | None, filters: dict) -> Flow[None]:
        """Emit every matching run, following next_cursor."""
        filters = dict(filters)
        cursor = filters.pop("cursor", None)
        while True:
            page = yield from self.page(cursor, limit, metadata, filters)
            for row in page["data"]:
                yield Emit(row)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, run_id: str) -> Flow[dict]:
        """POST cancel."""
        # Cancelling twice changes nothing, yet only resend when the first attempt surely did not arrive:
        # a resent cancel of a run that finished meanwhile would turn into a confusing 409.
        return send_for_data(self.cfg, Call("POST", f"{RUNS}/{run_id}/cancel", timeout=self.cfg.timeout))

    def events_page(self, run_id: str, after_seq: int = 0, limit: int = 500) -> Flow[Rows]:
        """One page of the event log after `after_seq`, normalised."""
        call = Call("GET", f"{RUNS}/{run_id}/events", params={"after_seq": after_seq, "limit": limit},
                    timeout=self.cfg.timeout, retry="always")
        rows = yield from send_for_data(self.cfg, call)
        return [normalize_event(e) for e in rows]

    def events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> Flow[Rows]:
        """The whole event log after `after_seq`, page by page."""
        out: Rows = []
        while True:
            rows = yield from self.events_page(run_id, after_seq, limit)
            out.extend(rows)
            if len(rows) < limit:
                return out
            after_seq = rows[-1]["seq"]


class _Collection:
    """Calls on one REST collection (`base` + a path), with the client's timeout unless given."""

    base = ""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Flow[Any]:
        kwargs.setdefault("timeout", self.cfg.timeout)
        return send_for_data(self.cfg, Call(method, self.base + path, **kwargs))

    @staticmethod
    def _path(*parts: str) -> str:
        # Each part quoted, so that no user input can reach another route.
        return "".join(f"/{quote(str(part), safe='')}" for part in parts)


class DeviceFlows(_Collection):
    """Flows behind `client.devices` (both shells)."""

    base = DEVICES

    def create(self, fields: dict) -> Flow[dict]:
        """POST a device."""
        return self._call("POST", json=drop_none(fields))

    def list(self) -> Flow[Rows]:
        """GET all devices."""
        return self._call("GET", retry="always")

    def get(self, device_id: str) -> Flow[dict]:
        """GET one device."""
        return self._call("GET", f"/{device_id}", retry="always")

    def update(self, device_id: str, fields: dict) -> Flow[dict]:
        """PATCH some fields (None removes a secret, so Nones are sent)."""
        return self._call("PATCH", f"/{device_id}", json=fields)

    def delete(self, device_id: str) -> Flow[None]:
        """DELETE a device."""
        return self._call("DELETE", f"/{device_id}")

    def test(self, device_id: str) -> Flow[dict]:
        """POST a connection test (it may take a while: the server connects to the device)."""
        return self._call("POST", f"/{device_id}/test", timeout=self.cfg.timeout + DEVICE_TEST_SECONDS)


def webhook_body(*, url: str | None = None, events: list[str] | tuple[str, ...] | None = None,
                 filters: dict | None = None, description: str | None = None, enabled: bool | None = None) -> dict:
    """The JSON body of POST /webhooks (absent fields take the server's defaults: all events, no filters)."""
    return drop_none(dict(url=url, events=None if events is None else list(events), filters=filters,
                          description=description, enabled=enabled))


class WebhookFlows(_Collection):
    """Flows behind `client.webhooks` (both shells).

    Reads are resent after any transient failure. The writes carry no Idempotency-Key, so they are resent
    only when the request surely never reached the server (or after a 429): a resent create would
    subscribe twice, a resent rotate-secret would replace the secret the first answer showed, and a resent
    redeliver would send the event once more.
    """

    base = WEBHOOKS

    def create(self, body: dict) -> Flow[dict]:
        """POST an endpoint; the answer carries its secret (the only time it is shown)."""
        return self._call("POST", json=body)

    def list(self) -> Flow[Rows]:
        """GET all endpoints (the per-run endpoint is not among them: get("per-run"))."""
        return self._call("GET", retry="always")

    def get(self, endpoint_id: str) -> Flow[dict]:
        """GET one endpoint."""
        return self._call("GET", self._path(endpoint_id), retry="always")

    def update(self, endpoint_id: str, fields: dict) -> Flow[dict]:
        """PATCH some fields (sent as given: None clears a description)."""
        return self._call("PATCH", self._path(endpoint_id), json=fields)

    def delete(self, endpoint_id: str) -> Flow[None]:
        """DELETE an endpoint."""
        return self._call("DELETE", self._path(endpoint_id))

    def rotate_secret(self, endpoint_id: str) -> Flow[dict]:
        """POST rotate-secret; the answer carries the new secret."""
        return self._call("POST", self._path(endpoint_id, "rotate-secret"))

    def deliveries_page(self, endpoint_id: str, cursor: str | None, limit: int | None, filters: dict) -> Flow[dict]:
        """One page of the endpoint's deliveries, newest first: {"data": [...], "next_cursor": str | None}."""
        call = Call("GET", WEBHOOKS + self._path(endpoint_id, "deliveries"),
                    params=list_params({**filters, "cursor": cursor, "limit": limit}),
                    timeout=self.cfg.timeout, retry="always")
        return decode_body((yield from send(self.cfg, call)), call)

    def deliveries(self, endpoint_id: str, limit: int | None, filters: dict) -> Flow[None]:
        """Emit every matching delivery, following next_cursor."""
        filters = dict(filters)
        cursor = filters.pop("cursor", None)
        while True:
            page = yield from self.deliveries_page(endpoint_id, cursor, limit, filters)
            for row in page["data"]:
                yield Emit(row)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def redeliver(self, endpoint_id: str, delivery_id: str) -> Flow[dict]:
        """POST redeliver: a new delivery of the same event (same event id)."""
        return self._call("POST", self._path(endpoint_id, "deliveries", delivery_id, "redeliver"))


def key_body(*, name: str | None = None, expires_in_days: int | None = None,
             expires_at: datetime | str | None = None) -> dict:
    """The JSON body of POST /keys (absent fields: no name, never expires)."""
    at = expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at
    return drop_none(dict(name=name, expires_in_days=expires_in_days, expires_at=at))


class KeyFlows(_Collection):
    """Flows behind `client.keys` (both shells): the tenant's API keys.

    Reads and revoke (revoking twice changes nothing) are resent after any transient failure; create and
    rotate only when the request surely never left: a resent create would make a second key, a resent
    rotate would refuse (the old key is revoked) after the first answer, with the new key, was lost.
    """

    base = KEYS

    def list(self) -> Flow[Rows]:
        """GET the tenant's keys."""
        return self._call("GET", retry="always")

    def get(self, prefix: str) -> Flow[dict]:
        """GET one key."""
        return self._call("GET", self._path(prefix), retry="always")

    def create(self, body: dict) -> Flow[dict]:
        """POST a key; the answer carries the full key (the only time it is shown)."""
        return self._call("POST", json=body)

    def revoke(self, prefix: str) -> Flow[dict]:
        """POST revoke."""
        return self._call("POST", self._path(prefix, "revoke"), retry="always")

    def rotate(self, prefix: str) -> Flow[dict]:
        """POST rotate; the answer carries the new full key."""
        return self._call("POST", self._path(prefix, "rotate"))


class AdminFlows:
    """Flows behind `client.admin` (both shells): the operator's endpoints (an operator key; a tenant key
    gets PermissionDenied)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def stats(self, pool: str | None = None) -> Flow[dict]:
        """GET the fleet's figures (pools, devices, workers), of one pool when given."""
        return send_for_data(self.cfg, Call("GET", ADMIN_STATS, params=drop_none({"pool": pool}),
                                            timeout=self.cfg.timeout, retry="always"))
