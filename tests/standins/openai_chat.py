"""OpenAI chat completions (POST /v1/chat/completions), streaming and not, as pi and Hermes call it."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.standins import script
from tests.standins.wire import JsonReply, SseReply, text_of


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages") or [] if isinstance(m, dict)]


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(text_of(m.get("content")) for m in _messages(body) if m.get("role") == "user")


def saw_tool_result(body: dict[str, Any]) -> bool:
    return any(m.get("role") == "tool" for m in _messages(body))


def respond(body: dict[str, Any]) -> JsonReply | SseReply:
    reply = script.decide(user_text(body), body.get("tools") or [], saw_tool_result(body))
    if reply.kind == "error":
        kind = "server_error" if reply.status >= 500 else "invalid_request_error"
        return JsonReply(reply.status, {"error": {"message": reply.text, "type": kind, "param": None,
                                                  "code": kind}})
    tokens_in, tokens_out = script.usage_numbers()
    usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "created": int(time.time()),
            "model": body.get("model") or "standin", "system_fingerprint": "standin"}
    if reply.kind == "tool":
        call = {"id": f"call_{uuid.uuid4().hex[:20]}", "type": "function",
                "function": {"name": reply.tool_name, "arguments": json.dumps(reply.tool_arguments)}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": reply.text}
        finish = "stop"
    if not body.get("stream"):
        return JsonReply(200, {**base, "object": "chat.completion", "usage": usage,
                               "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
    if reply.kind == "tool":
        events.append((None, chunk({"tool_calls": [{"index": 0, **call}]})))
    else:
        events.append((None, chunk({"content": reply.text})))
    events.append((None, chunk({}, finish)))
    # The usage chunk that stream_options.include_usage asks for (sent always: harmless otherwise).
    events.append((None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return SseReply(events)


def models(model_ids: list[str]) -> JsonReply:
    """GET /v1/models: every model the stand-in was asked about, with a generous context length."""
    return JsonReply(200, {"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": "standin", "context_length": 200_000}
        for m in model_ids]})
