"""Hermes Agent one-shot mode (`hermes --oneshot=PROMPT --usage-file F`), through a sh wrapper.

Sources:
- `hermes --help` / `hermes chat --help` of hermes-agent 0.19.0 (PyPI): `-z/--oneshot PROMPT`
  takes the prompt only as an argument and auto-approves tools; `--usage-file PATH` writes a
  JSON report "even when the run fails" and only in one-shot mode; `--yolo` bypasses dangerous
  command approvals; `-m/--model`. 0.19.0 has no stdin or file route for the prompt: `chat
  --query-file` (with `-` for stdin) exists only in later hermes-agent releases
  (NousResearch/hermes-agent hermes_cli/_parser.py), and it does not write a usage file.
- hermes-agent 0.19.0 hermes_cli/oneshot.py `_write_usage_file`: keys estimated_cost_usd,
  cost_status ("actual"|"estimated"|"included"|"unknown"), input/output/cache/reasoning/total
  tokens, api_calls, model, provider, session_id, completed, failed, and `failure` when the
  agent raised. Exit codes: 0 answered, 1 agent raised or no answer, 2 usage error or a failed
  run with no answer.
- Checked against 0.19.0 with a stub endpoint: a model that answers HTTP 500 gives exit 0,
  the error text on stdout and `"failed": true` in the usage file; `--oneshot=VALUE` carries
  a prompt starting with "-" (`-z --foo` is an argparse error), and the prompt reaches the
  model byte for byte.
- Verified end to end with the genuine hermes-agent 0.19.0 (tests/test_real_clis.py), including a
  110 KiB prompt through the argument route.

The wrapper exists because the prompt must become one argv element: a constant sh script
reads stdin into a variable and passes it as `--oneshot=$p`, so no user text is ever parsed
as shell. One argv string is capped by the kernel (MAX_ARG_STRLEN, 128 KiB on Linux), hence
MAX_PROMPT_BYTES.
"""
from __future__ import annotations

import json
from typing import Any

from providers._common import (
    as_dict,
    as_number,
    as_str,
    executable,
    invocation,
    join_messages,
    process_failure,
    signal_message,
    stderr_tail,
)
from providers.base import Invocation, ParsedResult, RunSpec

# Linux refuses an exec whose single argument exceeds MAX_ARG_STRLEN (131072 bytes including
# the NUL). The API rejects larger prompts (UTF-8 bytes) at creation time with a 422.
MAX_PROMPT_BYTES = 120_000

# Printed by the wrapper between hermes's answer and the usage report.
USAGE_MARKER = "__AGENTRUNS_HERMES_USAGE_5d1c9a7e__"

# $1.. is the hermes command line without the prompt. `$(cat; printf x)` keeps trailing
# newlines that plain `$(cat)` would strip. Traps turn TERM/INT/HUP into a normal exit so
# the EXIT trap removes the usage file; the exit code is hermes's own. No backslashes, so
# the script survives any quoting the driver's login shell applies.
WRAPPER_SCRIPT = (
    "f=; trap 'rm -f \"$f\"' EXIT\n"
    "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM\n"
    'p=$(cat; printf x); p=${p%x}\n'
    'f=$(mktemp) || exit 125\n'
    '"$@" --oneshot="$p" --usage-file "$f"\n'
    'rc=$?\n'
    f"echo {USAGE_MARKER}\n"
    'cat "$f"\n'
    'exit $rc\n'
)

# Costs Hermes could not price come back as 0.0 with status "unknown": not a real figure.
_PRICED = ("actual", "estimated", "included")


class Hermes:
    """Adapter for the `hermes` CLI (NousResearch hermes-agent)."""

    name = "hermes"
    default_executable = "hermes"
    max_prompt_bytes: int | None = MAX_PROMPT_BYTES

    def build(self, spec: RunSpec) -> Invocation:
        """`sh -c WRAPPER hermes-wrapper hermes [extra] --yolo [-m M]`; the prompt on stdin."""
        hermes = [executable(spec, self.default_executable), *spec.settings.extra_args]
        # -z already auto-approves; --yolo says so explicitly should that default change.
        hermes.append("--yolo")
        if spec.model:
            hermes += ["-m", spec.model]
        return invocation(spec, ["/bin/sh", "-c", WRAPPER_SCRIPT, "hermes-wrapper", *hermes])

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult:
        """Answer before the marker, usage JSON after; `failed` in the report beats exit 0."""
        answer, report = _split(stdout)
        fields: dict[str, Any] = dict(
            output=answer,
            usage=report,
            session_id=as_str((report or {}).get("session_id")),
            cost_usd=_cost(report),
        )
        if report is not None and report.get("failed") is True:
            # Hermes prints the provider's error as the "answer" when a run fails.
            message = as_str(report.get("failure")) or answer or None
            return ParsedResult(
                succeeded=False,
                error_code="provider_error",
                error_message=join_messages(message) or stderr_tail(stderr) or "hermes reported a failed run",
                **fields,
            )
        if exit_code is None:
            return ParsedResult(
                succeeded=False,
                error_code="nonzero_exit",
                error_message=join_messages(signal_message("hermes"), stderr_tail(stderr)),
                **fields,
            )
        if exit_code != 0 or not answer.strip():
            # exit 0 with no answer is what hermes itself calls a failed run.
            return process_failure("hermes", exit_code, stderr, **fields)
        return ParsedResult(succeeded=True, **fields)


def _split(stdout: str) -> tuple[str, dict[str, Any] | None]:
    """(answer, usage report); the last marker wins, since an answer may quote anything."""
    index = stdout.rfind(USAGE_MARKER)
    if index < 0:
        return _strip_newline(stdout), None
    answer = _strip_newline(stdout[:index])
    try:
        report = json.loads(stdout[index + len(USAGE_MARKER):])
    except ValueError:
        report = None
    return answer, as_dict(report)


def _strip_newline(text: str) -> str:
    # Hermes ends its answer with exactly one newline of its own.
    return text[:-1] if text.endswith("\n") else text


def _cost(report: dict[str, Any] | None) -> float | None:
    if not report or report.get("cost_status") not in _PRICED:
        return None
    return as_number(report.get("estimated_cost_usd"))
