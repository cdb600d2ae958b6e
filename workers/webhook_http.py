"""One webhook POST: on an address the request-forgery rules allow, without redirects or proxies.

httpcore, not httpx, because its network backend is where a connection is made: `GuardedBackend`
resolves the host itself, refuses it if any address is internal (core.outbound), and connects to the
address it checked, so a name that resolved to a public address when the URL was stored and to
169.254.169.254 now (DNS rebinding) is refused at the connection. TLS still verifies the certificate
against the URL's host name. A kept-alive connection is reused only for its own origin.
"""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpcore

from core import outbound

MAX_RESPONSE_BYTES = 64 * 1024  # read (and discard) at most this much of an answer


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no HTTP answer (see error)
    error: str | None
    latency_ms: int
    retry_after: float | None = None  # seconds, from a 429's or 503's Retry-After
    final: bool = False  # a refusal that no retry can change (the URL points somewhere forbidden)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, connecting only to the addresses core.outbound allows."""

    def __init__(self, allow_private: bool):
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = outbound.resolve(host, port, allow_private=self._allow_private)
        error: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # the next address of the name, as a browser would
                error = exc
        raise error or httpcore.ConnectError(f"{host} has no address")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise outbound.Refused("unix sockets are not webhook receivers")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Sender:
    """A connection pool for webhook POSTs (thread-safe: one per worker process)."""

    def __init__(self, *, timeout: float, allow_http: bool, allow_private: bool, max_connections: int):
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._allow_http = allow_http
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(), max_connections=max_connections, keepalive_expiry=30.0,
            retries=0, network_backend=GuardedBackend(allow_private))

    def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> Outcome:
        started = time.monotonic()

        def outcome(status: int | None, error: str | None, **extra) -> Outcome:
            return Outcome(status, error, round((time.monotonic() - started) * 1000), **extra)

        if urlsplit(url).scheme != "https" and not self._allow_http:
            return outcome(None, "refused: http webhooks are not allowed by this server", final=True)
        try:
            with self._pool.stream("POST", url, headers=headers, content=body,
                                   extensions={"timeout": self._timeout}) as response:
                read = 0
                for chunk in response.iter_stream():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
                retry_after = None
                if response.status in (429, 503):
                    raw = dict((k.lower(), v) for k, v in response.headers).get(b"retry-after")
                    retry_after = retry_after_seconds(raw.decode("latin-1") if raw else None)
                return outcome(response.status, None, retry_after=retry_after)
        except outbound.Unresolvable as exc:
            return outcome(None, str(exc))
        except outbound.Refused as exc:
            return outcome(None, f"refused: {exc}", final=True)
        except httpcore.TimeoutException as exc:
            return outcome(None, f"timeout: {type(exc).__name__}")
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            return outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        except httpcore.UnsupportedProtocol as exc:
            return outcome(None, f"refused: {exc}", final=True)

    def close(self) -> None:
        self._pool.close()
