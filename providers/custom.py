"""A user-supplied shell command as the agent: the prompt on stdin and in a file.

No external CLI to cite: this adapter defines the contract. The command sees
- stdin: the prompt, byte for byte (UTF-8);
- AGENTRUNS_PROMPT_FILE: a private file (mode 600) with the same bytes: on an ssh device the run's
  spool keeps one (ExecRequest.stdin_file_env), removed with the spool once the result is recorded;
  otherwise a temp file in $TMPDIR or /tmp, removed when the command ends, also on TERM/INT/HUP;
- AGENTRUNS_RUN_ID, AGENTRUNS_MODEL (empty when the run names no model).
It runs in the run's cwd under the device user's $SHELL (or /bin/sh, or the shell named by
the device's `executable` setting); `extra_args` become its positional parameters $1...
Its stdout is the output; exit 0 is success.

The command travels in the environment (AGENTRUNS_COMMAND) and a constant sh script runs it,
so nothing the user wrote is ever spliced into a command line.
"""
from __future__ import annotations

import secrets

from providers._common import join_messages, signal_message, stderr_tail
from providers.base import Invocation, ParsedResult, RunSpec

# $1 is the shell to use ("" for the default); $2.. go to the command as $1..
# A driver that keeps a private copy of stdin (ssh: in the run's spool) sets AGENTRUNS_PROMPT_FILE
# to its path, and the shell is simply exec'd. Otherwise the variable holds the file's name: random
# per run and never on a command line, so nobody else on the device can plant a file (a FIFO, a
# symlink) there first. cat creates it with noclobber and umask 077 in its own fork (the command
# keeps the caller's umask), which spares mktemp's fork and exec; a name already taken falls back
# to mktemp.
WRAPPER_SCRIPT = (
    'agentruns_shell=${1:-${SHELL:-/bin/sh}}; shift\n'
    # The driver made the file (an absolute path): nothing to copy or remove, so no trap either.
    'case $AGENTRUNS_PROMPT_FILE in /*) exec "$agentruns_shell" -c "$AGENTRUNS_COMMAND" agentruns-custom "$@" ;; esac\n'
    "f=; trap 'rm -f \"$f\"' EXIT\n"
    # Turn signals into a normal exit so the EXIT trap still removes the prompt file.
    "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM\n"
    'f=${TMPDIR:-/tmp}/$AGENTRUNS_PROMPT_FILE\n'
    'if [ -e "$f" ] || [ -h "$f" ]; then f=$(mktemp) && cat > "$f" || exit 125\n'
    'else (umask 077; set -C; exec cat > "$f") || exit 125; fi\n'
    'AGENTRUNS_PROMPT_FILE=$f; export AGENTRUNS_PROMPT_FILE\n'
    '"$agentruns_shell" -c "$AGENTRUNS_COMMAND" agentruns-custom "$@" < "$f"\n'
    # Never the last command: a shell that execs its last command would skip the EXIT trap.
    'exit $?\n'
)


class Custom:
    """Adapter for a run whose `command` is a shell command the user wrote."""

    name = "custom"
    max_prompt_bytes: int | None = None  # stdin and a file: no size limit

    def build(self, spec: RunSpec) -> Invocation:
        """`/bin/sh -c WRAPPER agentruns-custom SHELL [extra_args]` with the command in env."""
        if not spec.command:
            raise ValueError("the custom provider needs a command")
        argv = [
            "/bin/sh", "-c", WRAPPER_SCRIPT, "agentruns-custom",
            spec.settings.executable or "",
            *spec.settings.extra_args,
        ]
        env = {
            **spec.settings.env,
            # The run's own variables win over device settings: they define this contract.
            "AGENTRUNS_COMMAND": spec.command,
            "AGENTRUNS_RUN_ID": spec.run_id,
            "AGENTRUNS_PROMPT_FILE": f"agentruns-prompt.{secrets.token_hex(16)}",
            "AGENTRUNS_MODEL": spec.model or "",
        }
        return Invocation(argv=argv, stdin=spec.prompt.encode("utf-8"), env=env,
                          stdin_file_env="AGENTRUNS_PROMPT_FILE")

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult:
        """stdout as is; exit 0 succeeds, anything else is `nonzero_exit`."""
        if exit_code == 0:
            return ParsedResult(succeeded=True, output=stdout)
        what = signal_message("the command") if exit_code is None else f"the command exited with code {exit_code}"
        return ParsedResult(
            succeeded=False,
            output=stdout,
            error_code="nonzero_exit",
            error_message=join_messages(what, stderr_tail(stderr)),
        )
