"""pi coding agent (`pi -p --mode json`), prompt on stdin.

Sources:
- badlogic/pi-mono packages/coding-agent/docs/json.md (`--mode json`: one AgentSessionEvent
  per line: agent_start/end, turn_start/end, message_start/update/end, tool_execution_*)
- badlogic/pi-mono packages/ai/src/types.ts (AssistantMessage: content blocks, usage
  {input, output, cacheRead, cacheWrite, totalTokens, cost{..., total}}, stopReason
  "stop"|"length"|"toolUse"|"error"|"aborted", errorMessage)
- /work/shared/field-notes.md "Agent CLIs" (pi 0.73.1: the answer is the last assistant
  message_end; on a model error `--mode json` still exits 0)
- tests/data/providers/pi-0.73.1-*.jsonl: recorded from pi 0.73.1 against a stub endpoint
  (first line `{"type":"session","id":...}` even with --no-session)
- Verified end to end with the genuine pi 0.73.1 (tests/test_real_clis.py)
"""
from __future__ import annotations

from typing import Any

from providers._common import (
    as_dict,
    as_number,
    as_str,
    cli_argv,
    invocation,
    join_messages,
    json_objects,
    process_failure,
    signal_message,
    stderr_tail,
)
from providers.base import Invocation, ParsedResult, RunSpec

# Token counters summed over every assistant message (one per model call).
_TOKEN_KEYS = ("input", "output", "cacheRead", "cacheWrite", "totalTokens")


class Pi:
    """Adapter for the `pi` CLI."""

    name = "pi"
    default_executable = "pi"
    max_prompt_bytes: int | None = None  # stdin has no size limit

    def build(self, spec: RunSpec) -> Invocation:
        """`pi -p --mode json --no-session [--model M]`."""
        argv = cli_argv(spec, self.default_executable, [
            "-p",
            "--mode", "json",
            # The run record is the history; don't grow a session store on the device.
            "--no-session",
        ])
        return invocation(spec, argv)

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult:
        """The last assistant message is the answer; its stopReason decides, not the exit code."""
        session_id: str | None = None
        last: dict[str, Any] | None = None
        totals: dict[str, float] = {}
        cost: float | None = None
        for event in json_objects(stdout):
            kind = event.get("type")
            if kind == "session":
                session_id = as_str(event.get("id")) or session_id
            elif kind == "message_end":
                message = as_dict(event.get("message")) or {}
                if message.get("role") != "assistant":
                    continue
                last = message
                usage = as_dict(message.get("usage")) or {}
                for key in _TOKEN_KEYS:
                    value = as_number(usage.get(key))
                    if value is not None:
                        totals[key] = totals.get(key, 0) + value
                spent = as_number((as_dict(usage.get("cost")) or {}).get("total"))
                if spent is not None:
                    cost = (cost or 0.0) + spent

        if last is None:
            return process_failure("pi", exit_code, stderr, session_id=session_id)
        usage_out = {key: int(v) if v.is_integer() else v for key, v in totals.items()} or None
        fields: dict[str, Any] = dict(output=_text(last), usage=usage_out, cost_usd=cost, session_id=session_id)
        stop = as_str(last.get("stopReason"))
        if stop in ("error", "aborted") or as_str(last.get("errorMessage")):
            reason = as_str(last.get("errorMessage")) or f"pi stopped: {stop}"
            return ParsedResult(
                succeeded=False,
                error_code="provider_error",
                error_message=join_messages(reason) or stderr_tail(stderr),
                **fields,
            )
        if exit_code is None:
            return ParsedResult(
                succeeded=False,
                error_code="nonzero_exit",
                error_message=join_messages(signal_message("pi"), stderr_tail(stderr)),
                **fields,
            )
        return ParsedResult(succeeded=True, **fields)


def _text(message: dict[str, Any]) -> str:
    """The text blocks of an assistant message (thinking and tool calls left out)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [block.get("text") for block in content if isinstance(block, dict) and block.get("type") == "text"]
    return "\n".join(t for t in texts if isinstance(t, str))
