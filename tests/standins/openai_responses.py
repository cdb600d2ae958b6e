"""OpenAI Responses API (POST /v1/responses), streaming and not, as Codex calls it."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.standins import script
from tests.standins.wire import JsonReply, SseReply, text_of

# Input item types that carry a tool's result back to the model.
_TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    return [i for i in items or [] if isinstance(i, dict)]


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(text_of(i.get("content")) for i in _items(body) if i.get("role") == "user")


def saw_tool_result(body: dict[str, Any]) -> bool:
    return any(i.get("type") in _TOOL_OUTPUTS for i in _items(body))


def respond(body: dict[str, Any]) -> JsonReply | SseReply:
    reply = script.decide(user_text(body), body.get("tools") or [], saw_tool_result(body))
    if reply.kind == "error":
        kind = "server_error" if reply.status >= 500 else "invalid_request_error"
        return JsonReply(reply.status, {"error": {"message": reply.text, "type": kind, "param": None,
                                                  "code": kind}})
    tokens_in, tokens_out = script.usage_numbers()
    usage = {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": tokens_in + tokens_out}
    if reply.kind == "tool":
        item: dict[str, Any] = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:20]}", "status": "completed",
                "call_id": f"call_{uuid.uuid4().hex[:20]}", "name": reply.tool_name,
                "arguments": json.dumps(reply.tool_arguments)}
    else:
        item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:20]}", "status": "completed",
                "role": "assistant", "content": [{"type": "output_text", "text": reply.text, "annotations": []}]}
    response = {"id": f"resp_{uuid.uuid4().hex[:20]}", "object": "response", "created_at": int(time.time()),
                "status": "completed", "model": body.get("model") or "standin", "output": [item],
                "usage": usage}
    if not body.get("stream"):
        return JsonReply(200, response)
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "response": started}),
        ("response.in_progress", {"type": "response.in_progress", "response": started}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                        "item": {**item, "status": "in_progress"}}),
    ]
    if item["type"] == "message":
        events.append(("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                      "output_index": 0, "content_index": 0, "delta": reply.text}))
        events.append(("response.output_text.done", {"type": "response.output_text.done", "item_id": item["id"],
                                                     "output_index": 0, "content_index": 0, "text": reply.text}))
    else:
        events.append(("response.function_call_arguments.delta",
                       {"type": "response.function_call_arguments.delta", "item_id": item["id"],
                        "output_index": 0, "delta": item["arguments"]}))
        events.append(("response.function_call_arguments.done",
                       {"type": "response.function_call_arguments.done", "item_id": item["id"],
                        "output_index": 0, "arguments": item["arguments"]}))
    events.append(("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                                 "item": item}))
    events.append(("response.completed", {"type": "response.completed", "response": response}))
    return SseReply(events)
