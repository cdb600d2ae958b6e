"""OSA, the Optimal System Agent (`osa run --format json`), prompt on stdin.

OSA is not published on npm or PyPI; it installs from its own release script.
Sources:
- Miosa-osa/OSA docs/headless.md and lib/optimal_system_agent/cli/headless.ex (`osa run`:
  prompt as argument or on stdin; `--format json` prints one `result` object with
  subtype "success"|"error_during_execution", is_error, result (and `content`, the older
  name), error, session_id, total_cost_usd, usage; `--overdrive` (alias `--yolo`,
  `--dangerously-skip-permissions`) answers no approval prompts; `-m/--model`; exit 1 when
  the turn failed, 2 usage error, 3 OSA could not start)
- Miosa-osa/OSA lib/mix/tasks/osa.run.ex (older headless task: `{"type":"result",
  "session_id","content","cost",...}` or `{"type":"error","error",...}` and exit 1; its
  `cost` is the whole day's spend, so it is not reported as this run's cost)
- Miosa-osa/OSA bench/headtohead/README.md (older OSA closed a turn whose provider calls all
  failed as a success; the headless `result` now sets is_error for it, so is_error decides)
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


class Osa:
    """Adapter for the `osa` CLI."""

    name = "osa"
    default_executable = "osa"
    max_prompt_bytes: int | None = None  # stdin has no size limit

    def build(self, spec: RunSpec) -> Invocation:
        """`osa run --format json --overdrive [--model M]`."""
        argv = cli_argv(spec, self.default_executable, [
            "run",
            "--format", "json",
            # Headless OSA refuses any tool call that needs approval unless told otherwise.
            "--overdrive",
        ])
        return invocation(spec, argv)

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult:
        """The last `result` or `error` line decides."""
        final: dict[str, Any] | None = None
        for event in json_objects(stdout):
            if event.get("type") in ("result", "error"):
                final = event
        if final is None:
            return process_failure("osa", exit_code, stderr)

        output = as_str(final.get("result")) or as_str(final.get("content")) or ""
        fields: dict[str, Any] = dict(
            output=output,
            usage=as_dict(final.get("usage")),
            cost_usd=as_number(final.get("total_cost_usd")),
            session_id=as_str(final.get("session_id")),
        )
        subtype = as_str(final.get("subtype")) or ""
        # The older headless task had no is_error; where it is present only false passes.
        unreadable = "is_error" in final and final["is_error"] is not False
        if final.get("type") == "error" or unreadable or subtype.startswith("error"):
            message = as_str(final.get("error")) or output or "osa reported an error"
            return ParsedResult(
                succeeded=False,
                error_code="provider_error",
                error_message=join_messages(message) or stderr_tail(stderr),
                **fields,
            )
        if exit_code is None:
            return ParsedResult(
                succeeded=False,
                error_code="nonzero_exit",
                error_message=join_messages(signal_message("osa"), stderr_tail(stderr)),
                **fields,
            )
        return ParsedResult(succeeded=True, **fields)
