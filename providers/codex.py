"""OpenAI Codex CLI (`codex exec --json`), prompt on stdin via the `-` argument.

Sources:
- https://developers.openai.com/codex/noninteractive.md (`codex exec`, `--json` JSONL events,
  `--skip-git-repo-check`, sandbox/approval flags)
- openai/codex codex-rs/exec/src/exec_events.rs (ThreadEvent: thread.started{thread_id},
  turn.completed{usage{input_tokens,cached_input_tokens,output_tokens}},
  turn.failed{error{message}}, item.completed{item{id,type,...}}, error{message})
- openai/codex codex-rs/exec/src/event_processor_with_jsonl_output.rs (an `error` event can
  precede a turn that still completes; the turn's own completed/failed event is the verdict;
  config and deprecation warnings arrive as non-fatal `error` *items*)
- /work/shared/field-notes.md "Agent CLIs" (Codex 0.171.0: a 500 gives turn.failed, exit 1)
- Verified end to end with the genuine Codex 0.171.0 (tests/test_real_clis.py; recorded output in
  tests/data/providers/codex-0.171.0-*.jsonl): an unknown model name adds a non-fatal
  `item.completed{type:"error"}` warning before the turn
"""
from __future__ import annotations

from typing import Any

from providers._common import (
    as_dict,
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


class Codex:
    """Adapter for the `codex` CLI."""

    name = "codex"
    default_executable = "codex"
    max_prompt_bytes: int | None = None  # stdin has no size limit

    def build(self, spec: RunSpec) -> Invocation:
        """`codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox -`."""
        argv = cli_argv(spec, self.default_executable, [
            "exec",
            "--json",
            # A run's cwd need not be a git repository.
            "--skip-git-repo-check",
            # The device is the sandbox; nobody can answer an approval prompt.
            "--dangerously-bypass-approvals-and-sandbox",
        ], tail=("-",))  # "-": read the prompt from stdin
        return invocation(spec, argv)

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult:
        """The last agent_message is the answer; turn.completed/turn.failed is the verdict."""
        session_id = output = usage = None
        verdict: str | None = None  # "completed" | "failed"
        errors: list[str] = []
        for event in json_objects(stdout):
            kind = event.get("type")
            if kind == "thread.started":
                session_id = as_str(event.get("thread_id")) or session_id
            elif kind == "item.completed":
                item = as_dict(event.get("item")) or {}
                # Early exec builds named the discriminator `item_type`.
                if (item.get("type") or item.get("item_type")) == "agent_message":
                    output = item.get("text") if isinstance(item.get("text"), str) else output
            elif kind == "turn.completed":
                verdict, usage = "completed", as_dict(event.get("usage"))
            elif kind == "turn.failed":
                verdict = "failed"
                errors.append(as_str((as_dict(event.get("error")) or {}).get("message")) or "turn failed")
            elif kind == "error":
                errors.append(as_str(event.get("message")) or "codex reported an error")

        fields: dict[str, Any] = dict(output=output or "", usage=usage, session_id=session_id)
        if verdict == "failed" or (verdict is None and errors):
            return ParsedResult(
                succeeded=False,
                error_code="provider_error",
                error_message=join_messages(errors[-1]) or stderr_tail(stderr),
                **fields,
            )
        if verdict is None:
            return process_failure("codex", exit_code, stderr, **fields)
        if exit_code is None:
            return ParsedResult(
                succeeded=False,
                error_code="nonzero_exit",
                error_message=join_messages(signal_message("codex"), stderr_tail(stderr)),
                **fields,
            )
        return ParsedResult(succeeded=True, **fields)
