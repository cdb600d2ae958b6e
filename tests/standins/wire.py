"""What an API module hands the HTTP server: a JSON body or a list of server-sent events."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JsonReply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SseReply:
    events: list[tuple[str | None, Any]]  # (event name or None, data: a JSON value or a raw string)
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> list[bytes]:
        """One `event:`/`data:` block per event, as the wire carries them."""
        chunks = []
        for name, data in self.events:
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            head = f"event: {name}\n" if name else ""
            chunks.append(f"{head}data: {text}\n\n".encode())
        return chunks


def text_of(content: Any) -> str:
    """The text in a message's content: a string, or text-bearing parts of a list."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "\n".join(parts)
