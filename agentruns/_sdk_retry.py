"""The SDK's retry policy and response decoding (I/O-free: see agentruns._sdk_protocol)."""
from __future__ import annotations

import random
from typing import Any, NamedTuple

import httpx

from agentruns._sdk_protocol import Call, Config, Flow, Retry, Send, Sleep
from agentruns.client_errors import (
    AgentrunsError,
    ServerError,
    connection_error,
    error_from_response,
    parse_retry_after,
)

MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 60.0
# Transport errors after which a request may be sent again. Protocol misuse on our side is not among them.
RETRYABLE_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
# Errors where the request surely never reached the application: safe to resend for any method.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Verdict(NamedTuple):
    """What one attempt came to: the error (None on success), may it be resent, and after how long."""

    error: AgentrunsError | None
    retryable: bool = False
    retry_after: float | None = None


def backoff_delay(attempt: int, base: float = 0.5, retry_after: float | None = None) -> float:
    """Seconds to sleep before retry number `attempt` (0-based): Retry-After if given, else capped exponential
    backoff with "equal jitter" so a fleet of clients does not retry in lockstep."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER) + random.uniform(0, 0.1)
    ceiling = min(MAX_BACKOFF, base * 2 ** attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def judge_response(retry: Retry, resp: httpx.Response) -> Verdict:
    """The verdict on an HTTP answer: 429 may always be resent (refused before any work); 5xx and
    idempotency_key_in_use only for "always" calls."""
    if resp.status_code < 400:
        return Verdict(None)
    err = error_from_response(resp)
    retryable = resp.status_code == 429 or (retry == "always" and (
        resp.status_code >= 500 or err.code == "idempotency_key_in_use"))
    return Verdict(err, retryable, parse_retry_after(resp.headers.get("retry-after")))


def judge_failure(retry: Retry, exc: httpx.TransportError, request_id: str | None = None) -> Verdict:
    """The verdict on a transport failure: "safe" calls are resent only if they never left."""
    resendable = RETRYABLE_ERRORS if retry == "always" else NOT_SENT_ERRORS
    return Verdict(connection_error(exc, request_id), isinstance(exc, resendable))


def send(cfg: Config, call: Call) -> Flow[httpx.Response]:
    """Send `call`, resending it (the same Call: same X-Request-Id and Idempotency-Key) while the policy allows."""
    attempt = 0
    while True:
        try:
            resp = yield Send(call)
            verdict = judge_response(call.retry, resp)
        except httpx.TransportError as exc:
            verdict = judge_failure(call.retry, exc, call.request_id)
        if verdict.error is None:
            return resp
        if not verdict.retryable or attempt >= cfg.max_retries:
            raise verdict.error
        yield Sleep(backoff_delay(attempt, cfg.backoff_base, verdict.retry_after))
        attempt += 1


def decode_body(resp: httpx.Response, call: Call) -> dict:
    """The JSON object of a successful response; ServerError when it is not one (a proxy's page)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "data" not in body:
        raise ServerError(f"unexpected response body from {call.method} {call.path}", code="bad_response",
                          status=resp.status_code, request_id=resp.headers.get("x-request-id"))
    return body


def send_for_data(cfg: Config, call: Call) -> Flow[Any]:
    """`send`, then the body's `data` (None for 204)."""
    resp = yield from send(cfg, call)
    if resp.status_code == 204 or not resp.content:
        return None
    return decode_body(resp, call)["data"]
