"""What a stand-in model does, chosen by markers in the user's prompt (shared by the three APIs).

Markers (anywhere in the user's text):
- `[[id:TOKEN]]`     names the answer: `STANDIN-ANSWER: TOKEN` (else `STANDIN-ANSWER: ok`), so a test
                     running many CLIs at once can find its own requests in the log;
- `[[tool:CMD]]`     the first reply is one call of the CLI's shell tool running CMD; once the tool
                     result comes back the reply is `STANDIN-DONE: TOKEN`;
- `[[error:CODE]]`   the reply is HTTP CODE with a JSON error body of the API's shape whose message is
                     `STANDIN-ERROR CODE for TOKEN`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_ID = re.compile(r"\[\[id:([A-Za-z0-9_.-]+)\]\]")
_TOOL = re.compile(r"\[\[tool:(.*?)\]\]", re.S)
_ERROR = re.compile(r"\[\[error:(\d{3})\]\]")

# Shell tools by name, as the CLIs offer them (checked against the tools in their requests).
SHELL_TOOL_NAMES = ("Bash", "bash", "shell", "shell_command", "exec_command", "terminal", "run_shell_command")

INPUT_TOKENS = 1200
OUTPUT_TOKENS = 17


@dataclass(frozen=True)
class Reply:
    kind: str  # "text" | "tool" | "error"
    text: str = ""
    tool_name: str = ""
    tool_arguments: dict[str, Any] | None = None
    status: int = 200


def answer_text(token: str) -> str:
    return f"STANDIN-ANSWER: {token}"


def done_text(token: str) -> str:
    return f"STANDIN-DONE: {token}"


def error_text(code: int, token: str) -> str:
    return f"STANDIN-ERROR {code} for {token}"


def decide(user_text: str, tools: list[dict[str, Any]], saw_tool_result: bool) -> Reply:
    """The reply to one request, given the user's text, the offered tools and the conversation so far."""
    found = _ID.search(user_text)
    token = found.group(1) if found else "ok"
    error = _ERROR.search(user_text)
    if error:
        code = int(error.group(1))
        return Reply("error", text=error_text(code, token), status=code)
    tool = _TOOL.search(user_text)
    if tool and saw_tool_result:
        return Reply("text", text=done_text(token))
    if tool:
        shell = _shell_tool(tools)
        # A request without a shell tool (a title or summary side call) just gets text.
        if shell is not None:
            name, schema = shell
            return Reply("tool", tool_name=name, tool_arguments=_arguments(schema, tool.group(1)))
    return Reply("text", text=answer_text(token))


def _shell_tool(tools: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """(name, JSON schema of its parameters) of the shell tool the CLI offers, if any."""
    offered: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        # Anthropic {name, input_schema}; Responses {type:function, name, parameters};
        # chat completions {type:function, function:{name, parameters}}.
        inner = tool.get("function")
        fn: dict[str, Any] = inner if isinstance(inner, dict) else tool
        name = fn.get("name")
        if isinstance(name, str):
            offered[name] = fn.get("input_schema") or fn.get("parameters") or {}
    for name in SHELL_TOOL_NAMES:
        if name in offered:
            return name, offered[name]
    return None


def _arguments(schema: dict[str, Any], command: str) -> dict[str, Any]:
    """Arguments for the shell tool: `command` as a string, or as an argv where the schema wants one."""
    props = schema.get("properties") or {}
    key = "command" if "command" in props or not props else ("cmd" if "cmd" in props else next(iter(props)))
    if (props.get(key) or {}).get("type") == "array":
        return {key: ["bash", "-lc", command]}
    return {key: command}


def usage_numbers() -> tuple[int, int]:
    """(input tokens, output tokens) every reply reports."""
    return INPUT_TOKENS, OUTPUT_TOKENS
