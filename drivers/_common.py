"""Pieces both drivers share: output capping, env validation, safe callbacks, UTC timestamps."""
from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime

from .base import OutputCallback

log = logging.getLogger("agentruns.drivers")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The ssh wrapper's own shell variables start with this; an env variable of that name could change
# them while the env script is evaluated.
RESERVED_PREFIX = "__agentruns_"


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def validate_env(env: dict[str, str]) -> None:
    """Reject env names a shell cannot export and values a C environment cannot hold."""
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name) or name.startswith(RESERVED_PREFIX):
            raise ValueError(f"invalid environment variable name: {name!r}")
        if not isinstance(value, str) or "\x00" in value:
            # The value is a secret more often than not: name the variable, never echo the value.
            raise ValueError(f"environment variable {name} must be a string without NUL bytes")


class CappedBuffer:
    """Keep at most `cap` bytes of a stream: the head and the tail, flagging what was cut.

    Both ends matter to the callers: agent CLIs print their session id first and their final JSON
    result last, so dropping either end would lose what the provider parser needs. When the stream
    overflows, the kept bytes are the first cap//2 bytes followed directly by the last cap - cap//2
    bytes (no separator is inserted; `truncated` says a gap exists).
    """

    def __init__(self, cap: int):
        self.cap = max(0, cap)
        self.head_cap = self.cap // 2
        self.tail_cap = self.cap - self.head_cap
        self.total = 0
        self.truncated = False
        self._buf = bytearray()  # everything while under the cap, then the head only
        self._tail = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Append one chunk."""
        self.total += len(chunk)
        if not self.truncated:
            self._buf += chunk
            if len(self._buf) <= self.cap:
                return
            self.truncated = True
            rest = self._buf[self.head_cap:]
            del self._buf[self.head_cap:]
            self._tail = bytearray(rest[len(rest) - self.tail_cap:]) if self.tail_cap else bytearray()
            return
        if not self.tail_cap:
            return
        self._tail += chunk
        # Trim lazily (at twice the size) so a long stream costs amortised O(1) per byte.
        if len(self._tail) > 2 * self.tail_cap:
            del self._tail[: len(self._tail) - self.tail_cap]

    def getvalue(self) -> bytes:
        """Return the kept bytes (head + tail when truncated)."""
        if not self.truncated:
            return bytes(self._buf)
        tail = self._tail[len(self._tail) - self.tail_cap:] if self.tail_cap else b""
        return bytes(self._buf) + bytes(tail)


class OutputSink:
    """Caps both streams and forwards every chunk to the caller's callback, one call at a time.

    A failing callback is logged and ignored: a bug in a live-output consumer must not kill the run
    or leave a pipe undrained (which would block the process). `quiet` gives, per stream, how many
    leading bytes are captured without being forwarded: a re-attached run reads its output again
    from the start, and its earlier connections already streamed that much live.
    """

    def __init__(self, cap: int, callback: OutputCallback | None, quiet: dict[str, int] | None = None):
        self.stdout = CappedBuffer(cap)
        self.stderr = CappedBuffer(cap)
        self._callback = callback
        self._quiet = dict(quiet or {})
        self._lock = threading.Lock()  # the local driver feeds from two reader threads

    def position(self, stream: str) -> int:
        """How many bytes of `stream` were fed so far."""
        return (self.stdout if stream == "stdout" else self.stderr).total

    def feed(self, stream: str, chunk: bytes) -> None:
        """Store a chunk of `stream` ("stdout" or "stderr") and forward it."""
        if not chunk:
            return
        with self._lock:
            buffer = self.stdout if stream == "stdout" else self.stderr
            skip = max(0, min(len(chunk), self._quiet.get(stream, 0) - buffer.total))
            buffer.feed(chunk)
            if self._callback is not None and skip < len(chunk):
                try:
                    self._callback(stream, chunk[skip:] if skip else chunk)
                except Exception:  # noqa: BLE001 - see class docstring
                    log.exception("on_output callback failed; output is still being captured")


def call_on_start(on_start, pgid: int) -> None:
    """Invoke the caller's on_start, logging (not raising) its failure, like OutputSink."""
    if on_start is None:
        return
    try:
        on_start(pgid)
    except Exception:  # noqa: BLE001
        log.exception("on_start callback failed")
