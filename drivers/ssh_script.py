"""The remote side of an ssh run: a small POSIX sh wrapper, built only from quoted parts.

Protocol between the wrapper and the driver (all on the run's one channel):
- stdin: an env script (`export NAME='value'` lines, then a sentinel line), then the caller's stdin.
  Secrets therefore never appear on a command line (`ps` shows only the wrapper and the argv).
  The wrapper reads it with the shell's own `read`: a `$(dd ...)` cost a fork, an exec and two
  syscalls per byte, the largest part of the wrapper's CPU.
- stdout: one line "<tag> start <pgid>" once the env is set and the cwd entered, right before the
  exec; the driver strips it (and anything a shell rc file printed before it). If the cwd is
  missing the line is "<tag> cwd_not_found" and the wrapper exits. The tag carries a per-run nonce
  so command output cannot forge it.
Each command sshd starts is its own session, so the wrapper's `$$` is the process group id that
timeout and cancel later kill (`kill -s TERM -- -PGID` from a second channel).
"""
from __future__ import annotations

import math
import shlex

from ._common import validate_env

# Last line of every env script: a wrapper that got a truncated script (the connection died while
# sending it) refuses to run the command instead of running it with half its environment.
ENV_END = "# agentruns-env-end"
ENV_VAR = "AGENTRUNS_ENV_SCRIPT"  # carries the env script into the login shell, then is unset
# A raw newline in a value would split its line, and a line "# agentruns-env-end" inside a value
# would pass for the sentinel: values spell their newlines as this variable, which every shell
# that evals an env script sets first. The wrapper's own variables all start with RESERVED_PREFIX,
# which no env name may use (validate_env), so an evaluated env can never change them.
_NL_VAR = "__agentruns_nl"
_SET_NL = f"{_NL_VAR}='\n'"
# Shells known to take `-lc SCRIPT NAME ARGS...` with POSIX quoting; anything else (fish, csh,
# nologin...) falls back to /bin/sh -l.
_POSIX_SHELLS = "*/bash|*/zsh|*/ksh|*/mksh|*/dash|*/ash|*/sh"
_LOGIN_INNER = f'{_SET_NL}; eval "${ENV_VAR}"; unset {ENV_VAR} {_NL_VAR}; exec "$@"'


def tag(nonce: str) -> str:
    """The marker prefix of the wrapper's protocol line for one run."""
    return f"__agentruns_{nonce}"


def env_script(env: dict[str, str]) -> bytes:
    """`export NAME=<quoted value>` lines for the wrapper to eval, ending in the sentinel line."""
    validate_env(env)
    nl = f"'\"${_NL_VAR}\"'"  # shlex.quote keeps every newline inside single quotes
    lines = "".join(f"export {name}={shlex.quote(value).replace(chr(10), nl)}\n" for name, value in env.items())
    return (lines + ENV_END + "\n").encode()


def stdin_payload(env: dict[str, str], stdin: bytes) -> bytes:
    """What the driver writes to the channel: the env script, then the caller's stdin."""
    return env_script(env) + stdin


def remote_cwd(cwd: str) -> str:
    """Quote a cwd for `cd`: `~` means the device user's home, relative paths start there too."""
    if not cwd:
        raise ValueError("cwd must not be empty")
    if cwd == "~":
        return '"$HOME"'
    if cwd.startswith("~/"):
        return '"$HOME"/' + shlex.quote(cwd[2:])
    if cwd.startswith("/"):
        return shlex.quote(cwd)
    # "./" keeps CDPATH out of it (cd would print the directory to stdout) and rules out options.
    return shlex.quote("./" + cwd)


def build_command(
    argv: list[str],
    cwd: str,
    nonce: str,
    *,
    login_shell: bool,
    backstop: float | None,
    kill_grace: float,
) -> str:
    """The exec request string: `exec /bin/sh -c '<wrapper>'`, every user part shlex-quoted.

    backstop: if set and `timeout` (GNU or busybox) exists on the device, the command is also wrapped in
    `timeout -s TERM -k <grace> <backstop>` so it dies even if this worker vanishes mid-run.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    t = tag(nonce)
    lines = [
        _SET_NL,
        # `read` takes a pipe a byte at a time, so the caller's stdin after the sentinel is left
        # intact for the command. No sentinel (the connection died while sending): never run.
        "__agentruns_s= __agentruns_ok=",
        f"while IFS= read -r __agentruns_l; do case $__agentruns_l in {shlex.quote(ENV_END)}) "
        f"__agentruns_ok=1; break ;; esac; __agentruns_s=$__agentruns_s$__agentruns_l${_NL_VAR}; done",
        '[ -n "$__agentruns_ok" ] || exit 97',
        f"cd {remote_cwd(cwd)} 2>/dev/null || {{ printf '%s\\n' {shlex.quote(t + ' cwd_not_found')}; exit 96; }}",
        "__agentruns_t=",
    ]
    if backstop is not None:
        secs, grace = max(1, math.ceil(backstop)), max(1, math.ceil(kill_grace))
        lines.append(
            # `command -v` is a builtin: probing with `timeout --version` cost a fork and exec per run.
            f'if command -v timeout >/dev/null 2>&1; then __agentruns_t="timeout -s TERM -k {grace} {secs}"; fi'
        )
    quoted_argv = " ".join(shlex.quote(a) for a in argv)
    if login_shell:
        lines += [
            f'{ENV_VAR}=$__agentruns_s; export {ENV_VAR}; unset __agentruns_s',
            f'case "${{SHELL:-}}" in {_POSIX_SHELLS}) __agentruns_sh=$SHELL ;; *) __agentruns_sh=/bin/sh ;; esac',
            f"printf '%s %s\\n' {shlex.quote(t + ' start')} \"$$\"",
            f'exec $__agentruns_t "$__agentruns_sh" -lc {shlex.quote(_LOGIN_INNER)} agentruns {quoted_argv}',
        ]
    else:
        lines += [
            'eval "$__agentruns_s"',
            "unset __agentruns_s",
            f"printf '%s %s\\n' {shlex.quote(t + ' start')} \"$$\"",
            f"exec $__agentruns_t {quoted_argv}",
        ]
    return "exec /bin/sh -c " + shlex.quote("\n".join(lines))


def kill_command(pgid: int, grace: float) -> str:
    """Remote command: TERM the group, wait up to `grace` for it to go, then KILL; exit 3 if absent."""
    if not isinstance(pgid, int) or pgid <= 1:
        # `kill -- -1` would signal every process of the device user.
        raise ValueError(f"refusing to signal process group {pgid!r}")
    ticks = max(1, math.ceil(grace * 10))
    script = "\n".join([
        f"P={pgid}",
        'kill -s TERM -- "-$P" 2>/dev/null || exit 3',
        # `kill -0` is a builtin, so polling with it costs no process: a group that dies on TERM costs
        # nothing more. But it also counts zombies, and where PID 1 reaps lazily (containers) the
        # dead children stay zombies: after a few ticks, ask ps whether a live member is left, so a
        # stopped run does not always cost the whole grace period. (ps scans every process: with
        # hundreds of runs being canceled at once, running it on every tick was most of the cost.)
        "if command -v ps >/dev/null 2>&1 && command -v awk >/dev/null 2>&1; then",
        "  live() { ps -eo pgid=,stat= 2>/dev/null"
        " | awk -v p=\"$P\" '$1 == p && $2 !~ /^Z/ { f = 1 } END { exit !f }'; }",
        "else",
        "  live() { return 0; }",
        "fi",
        "i=0",
        f'while [ "$i" -lt {ticks} ] && kill -s 0 -- "-$P" 2>/dev/null; do',
        '  if [ "$i" -ge 3 ] && ! live; then break; fi',
        "  sleep 0.1; i=$((i+1))",
        "done",
        'kill -s KILL -- "-$P" 2>/dev/null',
        "exit 0",
    ])
    return "exec /bin/sh -c " + shlex.quote(script)
