"""Helpers shared by the provider adapters: argv pieces, JSONL reading, failure results.

Pure functions only: no I/O, no driver imports.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from providers.base import Invocation, ParsedResult, RunSpec

# Enough of stderr to explain a failure without flooding the run record.
STDERR_TAIL_CHARS = 2000

# Exit codes the shell itself uses when it cannot start the command: that is a setup
# problem on the device (CLI not installed, not executable), not an error from the agent.
SHELL_START_FAILURES = (126, 127)


def executable(spec: RunSpec, default: str) -> str:
    """The CLI to run: the device's configured executable, else the provider default."""
    return spec.settings.executable or default


def cli_argv(spec: RunSpec, default: str, flags: list[str], tail: tuple[str, ...] = ()) -> list[str]:
    """[executable, *flags, --model M when given, *the device's extra_args, *tail]."""
    model = ["--model", spec.model] if spec.model else []
    return [executable(spec, default), *flags, *model, *spec.settings.extra_args, *tail]


def invocation(spec: RunSpec, argv: list[str], env: dict[str, str] | None = None) -> Invocation:
    """An Invocation with the prompt on stdin and the device's settings env merged last."""
    merged = dict(env or {})
    # The operator's per-device env wins over our defaults (e.g. to unset IS_SANDBOX).
    merged.update(spec.settings.env)
    return Invocation(argv=argv, stdin=spec.prompt.encode("utf-8"), env=merged)


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Yield each line of text that parses as a JSON object; anything else is skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def as_str(value: Any) -> str | None:
    """value if it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def as_number(value: Any) -> float | None:
    """value as a float if it is a finite JSON number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_dict(value: Any) -> dict[str, Any] | None:
    """value if it is a JSON object, else None."""
    return value if isinstance(value, dict) else None


def trim(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """The last `limit` characters of text, stripped: the end of a log explains a failure."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def stderr_tail(stderr: str, limit: int = STDERR_TAIL_CHARS) -> str | None:
    """The last non-empty lines of stderr, at most `limit` characters; None when empty."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return None
    return trim("\n".join(lines), limit)


def join_messages(*parts: str | None) -> str | None:
    """Non-empty parts joined by ': ', trimmed; None when every part is empty."""
    kept = [part.strip() for part in parts if part and part.strip()]
    return trim(": ".join(kept)) if kept else None


def signal_message(cli: str) -> str:
    """The message for a process that a signal ended (timeout, cancel, OOM killer)."""
    return f"{cli} was terminated by a signal"


def process_failure(cli: str, exit_code: int | None, stderr: str, **fields: Any) -> ParsedResult:
    """A run whose CLI produced no structured result: judge it by exit code and stderr.

    - killed by a signal, or a nonzero exit with nothing on stderr, or the shell could not
      start the CLI (126/127): `nonzero_exit`;
    - a nonzero exit where the CLI printed an error: `provider_error`;
    - exit 0 without a result: `provider_error` (the CLI claimed success but said nothing).
    """
    tail = stderr_tail(stderr)
    if exit_code is None:
        code, message = "nonzero_exit", join_messages(signal_message(cli), tail)
    elif exit_code == 0:
        code, message = "provider_error", join_messages(f"{cli} exited 0 without a result", tail)
    elif tail is None or exit_code in SHELL_START_FAILURES:
        code, message = "nonzero_exit", join_messages(f"{cli} exited with code {exit_code}", tail)
    else:
        code, message = "provider_error", join_messages(f"{cli} exited with code {exit_code}", tail)
    fields.setdefault("output", "")
    return ParsedResult(succeeded=False, error_code=code, error_message=message, **fields)
