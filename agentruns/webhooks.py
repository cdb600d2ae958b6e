"""Signing and verifying the service's webhook events (Stripe's scheme).

Each event is POSTed with two headers:

    Agentruns-Signature: t=1700000000,v1=5e138d...
    Agentruns-Event-Id: evt_...

`v1` is the lowercase hex HMAC-SHA256 of ``"{t}." + body`` keyed with the endpoint's secret (the whole
``whsec_...`` string). While a secret is being rotated the header carries one `v1` per secret, so a
receiver holding either the old or the new secret accepts the event. Signing the timestamp too bounds
replays to the tolerance (300 s by default). A receiver in Flask:

    import os

    from flask import Flask, request
    from agentruns import webhooks

    app = Flask(__name__)

    @app.post("/agentruns/events")
    def agentruns_event():
        try:
            event = webhooks.verify(request.get_data(), request.headers.get(webhooks.SIGNATURE_HEADER),
                                    os.environ["AGENTRUNS_WEBHOOK_SECRET"])
        except webhooks.WebhookVerificationError as error:
            return {"error": error.code}, 400
        handle(event)  # delivery is at least once: skip an event["id"] already handled
        return "", 204

Verify the raw body as received: a framework that parses and re-serializes the JSON changes its bytes.
The TypeScript and Go SDKs implement the same scheme; clients/webhook-signature-vectors.json holds all
three to the same answers.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Sequence
from secrets import token_urlsafe
from typing import Any, Literal, NoReturn

__all__ = ["DEFAULT_TOLERANCE", "EVENT_ID_HEADER", "SIGNATURE_HEADER", "WebhookVerificationError",
           "generate_secret", "sign", "verify"]

SIGNATURE_HEADER = "Agentruns-Signature"
EVENT_ID_HEADER = "Agentruns-Event-Id"
DEFAULT_TOLERANCE = 300  # seconds either side of the receiver's clock

Code = Literal["malformed_header", "timestamp_outside_tolerance", "signature_mismatch", "malformed_body"]

# ASCII digits only: int() would also take "+5", " 5", "1_000" and other scripts' digits, which the
# TypeScript and Go SDKs read differently.
_DIGITS = re.compile(r"[0-9]+")
# HTTP's optional whitespace; str.strip() would take more than the other SDKs do.
_OWS = " \t"


class WebhookVerificationError(ValueError):
    """An event that must not be trusted; `code` says why (answer it with a 400)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code: Code = code


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` and 43 URL-safe characters (256 random bits)."""
    return "whsec_" + token_urlsafe(32)


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes | str, secrets: str | Sequence[str], timestamp: int) -> str:
    """The Agentruns-Signature value for `body` sent at `timestamp` (unix seconds): one v1 per secret, in
    the order given (during a rotation, the new secret and the old)."""
    if isinstance(secrets, str):
        secrets = [secrets]
    if not secrets or not all(secrets):
        raise ValueError("sign needs at least one non-empty secret")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError(f"timestamp must be unix seconds as a non-negative int, not {timestamp!r}")
    raw = body.encode() if isinstance(body, str) else body
    return ",".join([f"t={timestamp}", *(f"v1={_digest(s, str(timestamp), raw)}" for s in secrets)])


def _parse(header: str | None) -> tuple[str, list[str]]:
    """The header's timestamp (its digits as sent: they are what was signed) and its v1 signatures."""
    if not header or not header.strip(_OWS):
        raise WebhookVerificationError("malformed_header", f"the {SIGNATURE_HEADER} header is missing or empty")
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            continue  # not a key=value item: ignored like an unknown scheme
        key, value = key.strip(_OWS), value.strip(_OWS)
        if key == "t":
            if timestamp is not None:
                raise WebhookVerificationError("malformed_header", f"{SIGNATURE_HEADER} has more than one t=")
            if not _DIGITS.fullmatch(value):
                raise WebhookVerificationError(
                    "malformed_header", f"{SIGNATURE_HEADER}'s t= must be unix seconds, not {value!r}")
            timestamp = value
        elif key == "v1":
            signatures.append(value)
        # Other schemes (v0=...) are skipped, so a sender can add one before every receiver knows it.
    if timestamp is None:
        raise WebhookVerificationError("malformed_header", f"{SIGNATURE_HEADER} has no t= timestamp")
    if not signatures:
        raise WebhookVerificationError("malformed_header", f"{SIGNATURE_HEADER} has no v1= signature")
    return timestamp, signatures


def _seconds(digits: str) -> float:
    # int() refuses strings of over 4300 digits; any t that long is far outside every tolerance anyway.
    significant = digits.lstrip("0")
    return float(int(significant or "0")) if len(significant) <= 30 else math.inf


def _reject_constant(name: str) -> NoReturn:
    # json.loads takes NaN and Infinity, which are not JSON and which the other SDKs refuse.
    raise ValueError(f"{name} is not JSON")


def verify(body: bytes | str, signature_header: str | None, secret: str, tolerance: int = DEFAULT_TOLERANCE, *,
           now: float | None = None) -> dict[str, Any]:
    """The event in `body` once `signature_header` proves `secret`'s holder sent it within `tolerance`
    seconds of `now` (default: the clock). Raises WebhookVerificationError otherwise; its code is, in
    the order checked: malformed_header, timestamp_outside_tolerance, signature_mismatch, malformed_body.

    `body` is the request's raw body (a str is taken as its UTF-8 encoding).
    """
    if not secret:
        # A configuration mistake (an unset variable), not a bad request: fail loudly, not with a 400.
        raise ValueError("verify needs the endpoint's webhook secret; got an empty one")
    timestamp, signatures = _parse(signature_header)

    age = (time.time() if now is None else now) - _seconds(timestamp)
    if abs(age) > tolerance:
        raise WebhookVerificationError(
            "timestamp_outside_tolerance",
            f"the event was signed at t={timestamp}, {abs(age):.0f} s {'ago' if age > 0 else 'ahead of this clock'}:"
            f" outside the {tolerance} s tolerance (a replayed event, or a clock that is off)")

    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = _digest(secret, timestamp, raw).encode()
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header can hold anything.
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in signatures):
        raise WebhookVerificationError(
            "signature_mismatch",
            "no v1 signature matches: the secret is not this endpoint's, or the body was changed "
            "(verify the raw bytes as received, before any JSON parsing)")

    try:
        # decode() first: json.loads(bytes) would also guess UTF-16 and UTF-32.
        event = json.loads(raw.decode(), parse_constant=_reject_constant)
    except ValueError as error:
        raise WebhookVerificationError("malformed_body", f"the signed body is not JSON: {error}") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookVerificationError("malformed_body", "the signed body is not an event: an object with id and type")
    return event
