"""What the SDK's I/O-free core and its two shells (sync `Client`, async `AsyncClient`) say to each other.

The core is written as generators ("flows") that yield instructions and are sent back their results, the
way h11 leaves the socket to its caller. A shell performs each instruction and nothing else:

    Send(call)  -> the httpx.Response, body read; a transport failure is thrown into the flow instead
    Open(call)  -> the head of a streamed response (body unread); it becomes the flow's open stream
    ReadLine()  -> the open stream's next line, or None at its end (the shell then closes it)
    ReadBody()  -> the open stream's response with its body read (the shell then closes it)
    Close()     -> None; drop the open stream (the shell also drops it on any failure and at the end)
    Sleep(s)    -> None, after `s` seconds
    Emit(item)  -> None; hand `item` to the caller of an iterating method (list, stream)

httpx's Request/Response/exception types are plain data here: the core never opens a connection.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx

T = TypeVar("T")
Flow = Generator["Instruction", Any, T]

DEFAULT_URL = "http://127.0.0.1:8000"
# However long a request may take (a long-poll adds its wait), a host that does not answer the
# connection attempt within this is unreachable.
MAX_CONNECT_TIMEOUT = 10.0

# "always": resend after any transport error, 5xx, 429 or idempotency_key_in_use (reads, and creates,
# which carry an Idempotency-Key). "safe": only when the request surely never reached the server, or 429.
Retry = Literal["always", "safe"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentruns")
    except Exception:  # noqa: BLE001 - an uninstalled checkout still works
        return "0"


@dataclass(frozen=True)
class Config:
    """Where the API is and how patiently to talk to it; shared by every flow of one client."""

    base_url: str
    api_key: str | None = None
    timeout: float = 30.0
    max_retries: int = 3
    backoff_base: float = 0.5

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, timeout: float = 30.0, max_retries: int = 3,
                backoff_base: float = 0.5) -> Config:
        """The arguments, else AGENTRUNS_API_URL / AGENTRUNS_API_KEY, else the local default URL."""
        url = base_url or os.environ.get("AGENTRUNS_API_URL") or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get("AGENTRUNS_API_KEY")
        # Accept the URL with or without the API prefix: every path below carries it.
        return cls(url.rstrip("/").removesuffix("/api/v1"), key, timeout, max_retries, backoff_base)

    def headers(self) -> dict[str, str]:
        """Headers every request carries."""
        headers = {"User-Agent": f"agentruns-python/{_version()}", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True)
class Call:
    """One logical HTTP request. Built once and resent as it is, so every attempt carries the same
    X-Request-Id (and Idempotency-Key, when there is one)."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    read_timeout: float | None = None  # for streams: how long the server may stay silent
    retry: Retry = "safe"

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {"X-Request-Id": uuid.uuid4().hex, **self.headers})

    @property
    def request_id(self) -> str:
        """The X-Request-Id all attempts share."""
        return self.headers["X-Request-Id"]

    def httpx_timeout(self) -> httpx.Timeout:
        """The call's timeouts as httpx wants them."""
        return httpx.Timeout(self.timeout, connect=min(self.timeout, MAX_CONNECT_TIMEOUT),
                             read=self.read_timeout or self.timeout)


@dataclass(frozen=True)
class Send:
    """Send the call; reply: the response, body read."""

    call: Call


@dataclass(frozen=True)
class Open:
    """Send the call as a stream; reply: the response head."""

    call: Call


@dataclass(frozen=True)
class ReadLine:
    """Reply: the open stream's next line, None at its end."""


@dataclass(frozen=True)
class ReadBody:
    """Reply: the open stream's response, body read."""


@dataclass(frozen=True)
class Close:
    """Drop the open stream."""


@dataclass(frozen=True)
class Sleep:
    """Pause the flow."""

    seconds: float


@dataclass(frozen=True)
class Emit:
    """Give an item to the caller of an iterating method."""

    item: Any


Instruction = Send | Open | ReadLine | ReadBody | Close | Sleep | Emit
