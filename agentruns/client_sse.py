"""Server-Sent Events parsing and run-event normalisation for the SDK (pure: no I/O)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from agentruns.vocabulary import EVENT_TYPES, TERMINAL


@dataclass
class SSEMessage:
    """One dispatched SSE message (the fields of the WHATWG event-stream format)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


@dataclass
class SSEDecoder:
    """Feed it lines (without their line ending); it returns a message at each blank line."""

    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _retry: int | None = None
    last_event_id: str | None = None

    def feed(self, line: str) -> SSEMessage | None:
        """Consume one line; a complete message comes back on the blank line that ends it."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. the server's keepalive
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data:  # the spec drops a message without data (it may still set the id)
            self._event, self._id = "", None
            return None
        msg = SSEMessage(data="\n".join(self._data), event=self._event or "message", id=self._id, retry=self._retry)
        self._data, self._event, self._id, self._retry = [], "", None, None
        return msg


def normalize_event(event: dict) -> dict:
    """A run event with status or note `data` always decoded to a dict ({"status": ..., "error"?: ...},
    {"note": ...})."""
    if event.get("type") in ("status", "note") and isinstance(event.get("data"), str):
        try:
            decoded = json.loads(event["data"])
        except ValueError:
            decoded = event["data"]
        key = "note" if event["type"] == "note" else "status"
        event = {**event, "data": decoded if isinstance(decoded, dict) else {key: decoded}}
    return event


def event_from_sse(msg: SSEMessage) -> dict | None:
    """The run event carried by an SSE message; None for messages that are not run events."""
    try:
        payload = json.loads(msg.data)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "seq" in payload and "type" in payload:
        return normalize_event(payload)
    # A server that sends the chunk itself as data: rebuild the event from the SSE fields.
    if msg.id is None or not msg.id.isdigit() or msg.event not in EVENT_TYPES:
        return None
    return normalize_event({"seq": int(msg.id), "type": msg.event, "data": msg.data, "at": None})


def terminal_status(event: dict) -> str | None:
    """The terminal status an event announces, else None."""
    if event.get("type") != "status":
        return None
    data = event.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    return status if status in TERMINAL else None
