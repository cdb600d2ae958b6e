"""Anthropic Messages API (POST /v1/messages), streaming and not, as Claude Code calls it."""
from __future__ import annotations

import json
import uuid
from typing import Any

from tests.standins import script
from tests.standins.wire import JsonReply, SseReply, text_of


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(text_of(m.get("content")) for m in body.get("messages") or []
                     if isinstance(m, dict) and m.get("role") == "user")


def saw_tool_result(body: dict[str, Any]) -> bool:
    return any(isinstance(block, dict) and block.get("type") == "tool_result"
               for m in body.get("messages") or [] if isinstance(m, dict) and isinstance(m.get("content"), list)
               for block in m["content"])


def respond(body: dict[str, Any]) -> JsonReply | SseReply:
    reply = script.decide(user_text(body), body.get("tools") or [], saw_tool_result(body))
    request_id = f"req_standin_{uuid.uuid4().hex[:12]}"
    if reply.kind == "error":
        kind = "api_error" if reply.status >= 500 else "invalid_request_error"
        return JsonReply(reply.status, {"type": "error", "error": {"type": kind, "message": reply.text}},
                         {"request-id": request_id})
    model = body.get("model") or "standin"
    tokens_in, tokens_out = script.usage_numbers()
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if reply.kind == "tool":
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": reply.tool_name,
                 "input": reply.tool_arguments}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": reply.text}
        stop = "end_turn"
    message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "model": model,
               "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage}
    headers = {"request-id": request_id}
    if not body.get("stream"):
        return JsonReply(200, message, headers)
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    if block["type"] == "text":
        opened: dict[str, Any] = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": reply.text}
    else:
        opened = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(reply.tool_arguments)}
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opened}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": tokens_out}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return SseReply(events, headers)


def count_tokens(body: dict[str, Any]) -> JsonReply:
    """POST /v1/messages/count_tokens: a plausible number."""
    return JsonReply(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
