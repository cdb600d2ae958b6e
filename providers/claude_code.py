"""Claude Code (`claude -p`) in headless mode with a stream-json transcript.

Sources:
- https://docs.claude.com/en/docs/claude-code/headless (-p/--print, --output-format
  text|json|stream-json; stream-json starts with a system `init` message and ends with a
  `result` message carrying result, is_error, session_id, total_cost_usd, usage)
- https://dev.to/aobaworks/claude-code-output-format-json-fields-jq-python-parsing-3edj
  (the cost field is `total_cost_usd`; older posts' `cost_usd` reads as null)
- /work/shared/field-notes.md "Agent CLIs" (Claude Code 2.1.197 as observed: stream-json
  needs --verbose; as root bypassPermissions fails unless IS_SANDBOX=1; `subtype:"success"`
  can come with `is_error:true`)
- Verified end to end with the genuine Claude Code 2.1.332 (tests/test_real_clis.py; recorded
  output in tests/data/providers/claude-code-2.1.332-*.jsonl): an HTTP 500 still ends with
  `subtype:"success"`, `is_error:true`, exit 1
"""
from __future__ import annotations

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


class ClaudeCode:
    """Adapter for the `claude` CLI; the prompt travels on stdin."""

    name = "claude-code"
    default_executable = "claude"
    max_prompt_bytes: int | None = None  # stdin has no size limit

    def build(self, spec: RunSpec) -> Invocation:
        """`claude -p --output-format stream-json --verbose --permission-mode bypassPermissions`."""
        argv = cli_argv(spec, self.default_executable, [
            "-p",
            "--output-format", "stream-json",
            # stream-json in print mode is refused without --verbose.
            "--verbose",
            # Nobody can answer a permission prompt in a headless run.
            "--permission-mode", "bypassPermissions",
        ])
        # Claude Code refuses bypassPermissions as root unless told it is in a sandbox.
        env = {"IS_SANDBOX": "1"} if spec.device_username == "root" else {}
        return invocation(spec, argv, env)

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult:
        """Read the last `result` line; its is_error/subtype decide, not the exit code."""
        result: dict | None = None
        session_id: str | None = None
        for event in json_objects(stdout):
            # The init line already names the session, so a run cut short still has one.
            session_id = as_str(event.get("session_id")) or session_id
            if event.get("type") == "result":
                result = event
        if result is None:
            return process_failure("claude", exit_code, stderr, session_id=session_id)

        output = as_str(result.get("result")) or ""
        parsed = ParsedResult(
            succeeded=True,
            output=output,
            usage=as_dict(result.get("usage")),
            cost_usd=as_number(result.get("total_cost_usd")),
            session_id=as_str(result.get("session_id")) or session_id,
        )
        subtype = as_str(result.get("subtype")) or ""
        # is_error is the verdict ("success" can come with is_error true): only an explicit
        # false passes. error_* subtypes (max turns, execution errors) fail whatever it says.
        if result.get("is_error") is not False or subtype.startswith("error"):
            parsed.succeeded = False
            parsed.error_code = "provider_error"
            parsed.error_message = _error_message(result, output, subtype) or stderr_tail(stderr)
        elif exit_code is None:
            parsed.succeeded = False
            parsed.error_code = "nonzero_exit"
            parsed.error_message = join_messages(signal_message("claude"), stderr_tail(stderr))
        return parsed


def _error_message(result: dict, output: str, subtype: str) -> str | None:
    """The reason Claude Code gave: its `errors` list, else the result text, else the subtype."""
    errors = result.get("errors")
    if isinstance(errors, list):
        texts = [as_str(e) or as_str((as_dict(e) or {}).get("message")) for e in errors]
        joined = join_messages("; ".join(t for t in texts if t))
        if joined:
            return joined
    return join_messages(output) or f"claude reported {subtype or 'an error'}"
