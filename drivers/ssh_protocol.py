"""Reading one ssh channel of a run: the wrapper's protocol lines apart from the command's output.

Pure (no I/O), so the bookkeeping the resumption depends on is tested without a device:
- before the first protocol line ("<tag> start <pgid>", "<tag> attached <pgid>", "<tag> gone", ...)
  stdout is shell rc noise and is dropped;
- an attach prints its verdict last, as "\\n<tag> end <status>" or "\\n<tag> more": a suffix of the
  stream that could still become that line is held back until the next chunk says otherwise, so
  the output passed on is exactly the command's bytes (`offset` counts them).
"""
from __future__ import annotations

_NOISE_KEPT = 65536  # stdout noise before the protocol line is dropped beyond this


class ChannelStream:
    """One stream of one channel: the protocol line, then the command's output, then (attach) the verdict.

    The wrapper marks both streams: stdout with "<tag> start|attached|... ", stderr with "<tag> stderr"
    right before the command's stderr can follow, so what a shell rc file printed before is told apart
    from the command's output on each (it is kept in `noise` for error messages).
    """

    def __init__(self, tag: bytes, *, verdict: bool):
        self.tag = tag
        self.verdict = verdict  # an attach ends its stdout with a verdict line
        self.line: list[bytes] | None = None  # the words after the tag on the protocol line
        self.offset = 0  # command output bytes passed on by feed()/finish()
        self.noise = b""  # the end of what came before the protocol line
        self._marker = b"\n" + tag + b" "
        self._pre = bytearray()
        self._held = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Take a chunk of the channel's stdout; return the command output that can be passed on now."""
        if self.line is None:
            data = self._protocol_line(data)
            if self.line is None or not data:
                return b""
        if not self.verdict:
            self.offset += len(data)
            return data
        buf = bytes(self._held) + data
        end = len(buf)
        at = buf.rfind(self._marker)
        if at >= 0:
            newline = buf.find(b"\n", at + len(self._marker))
            if newline < 0 or newline == len(buf) - 1:
                end = at  # a verdict line, whole or in part, at the very end: hold it
        if end == len(buf):
            end -= _partial_suffix(buf, self._marker)
        self._held = bytearray(buf[end:])
        self.offset += end
        return buf[:end]

    def pending_noise(self) -> bytes:
        """What came so far without a protocol line (the shell's own complaints, if it never got there)."""
        return bytes(self._pre[-500:]) if self.line is None else self.noise

    def finish(self) -> tuple[bytes, list[bytes] | None]:
        """At the channel's end: the output still held back, and the verdict's words (None: no verdict)."""
        held, self._held = bytes(self._held), bytearray()
        if self.verdict and held.startswith(self._marker) and held.endswith(b"\n") and held.count(b"\n") == 2:
            words = held[len(self._marker):-1].split()
            if words[:1] in ([b"end"], [b"more"]):
                return b"", words
        self.offset += len(held)
        return held, None

    def _protocol_line(self, data: bytes) -> bytes:
        self._pre += data
        at = self._pre.find(self.tag + b" ")
        end = self._pre.find(b"\n", at) if at >= 0 else -1
        if end < 0:
            if at < 0 and len(self._pre) > _NOISE_KEPT:
                del self._pre[: len(self._pre) - len(self.tag)]  # noise only; keep a possible partial tag
            return b""
        self.line = bytes(self._pre[at + len(self.tag) + 1:end]).split()
        self.noise = bytes(self._pre[max(0, at - 500):at])
        rest = bytes(self._pre[end + 1:])
        self._pre.clear()
        return rest


def _partial_suffix(buf: bytes, marker: bytes) -> int:
    """The length of the longest end of buf that is a proper beginning of marker."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0


def exit_code(status: int | None) -> int | None:
    """The command's exit code from the status its waiter reported: None for a death by signal.

    The waiter is a shell, which reports a child killed by signal N as 128 + N; the ssh driver (like
    the local one) reports such a death as None. A command that itself exits with 129 to 192 reads
    the same way.
    """
    if status is None or status < 0 or 128 < status <= 128 + 64:
        return None
    return status


def parse_status(word: bytes | None) -> int | None:
    """A status word from a verdict or the spool's status line ("-" or anything unreadable: None)."""
    try:
        return int(word) if word is not None else None
    except ValueError:
        return None
