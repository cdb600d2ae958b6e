"""One webhook POST: on an address the request-forgery rules allow, without redirects or proxies, within
one deadline for the whole request (name lookup, connect, send, answer).

httpcore, not httpx, because its network backend is where a connection is made: `GuardedBackend`
resolves the host itself, refuses it if any address is internal (core.outbound), and connects to the
address it checked, so a name that resolved to a public address when the URL was stored and to
169.254.169.254 now (DNS rebinding) is refused at the connection. TLS still verifies the certificate
against the URL's host name. A kept-alive connection is reused only for its own origin.
"""
from __future__ import annotations

import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
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


# The deadline of the request the current thread is making (a sync request runs on one thread).
# httpcore's own timeouts are per step (each read may wait the whole timeout again): a receiver
# trickling one byte a second would otherwise hold a delivery past its hold, and a second dispatcher
# would send it again.
_request = threading.local()
# getaddrinfo has no timeout of its own; a lookup left running past its deadline finishes here.
_resolver = ThreadPoolExecutor(4, thread_name_prefix="agentruns-webhook-dns")


def _left(timeout: float | None, error: type[httpcore.TimeoutException]) -> float:
    left = getattr(_request, "deadline", float("inf")) - time.monotonic()
    if left <= 0:
        raise error("the request's time is up")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, connecting only to the addresses core.outbound allows."""

    def __init__(self, allow_private: bool):
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        lookup = _resolver.submit(outbound.resolve, host, port, allow_private=self._allow_private)
        try:
            addresses = lookup.result(_left(timeout, httpcore.ConnectTimeout))
        except FutureTimeout:
            raise httpcore.ConnectTimeout(f"looking up {host} took too long") from None
        error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(address, port, _left(timeout, httpcore.ConnectTimeout),
                                                 local_address, socket_options)
                return _DeadlineStream(stream)
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
    if re.fullmatch(r"[0-9]{1,10}", value):  # not str.isdigit(), which takes "²" too
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Sender:
    """A connection pool for webhook POSTs (thread-safe: one per worker process)."""

    def __init__(self, *, timeout: float, allow_http: bool, allow_private: bool, max_connections: int):
        self._total = timeout
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
        _request.deadline = started + self._total
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
        except Exception as exc:  # noqa: BLE001 - a URL httpcore will not send, say: no retry can change it
            return outcome(None, f"not sent: {type(exc).__name__}: {exc}"[:500], final=True)
        finally:
            _request.deadline = float("inf")

    def close(self) -> None:
        self._pool.close()
