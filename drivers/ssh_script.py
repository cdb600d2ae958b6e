"""The remote side of an ssh run: a small POSIX sh wrapper, built only from quoted parts.

Protocol between the wrapper and the driver (all on the run's one channel):
- stdin: an env script (`export NAME='value'` lines, then a sentinel line), then the caller's stdin.
  Secrets therefore never appear on a command line (`ps` shows only the wrapper and the argv).
  The wrapper reads it with the shell's own `read`: a `$(dd ...)` cost a fork, an exec and two
  syscalls per byte, the largest part of the wrapper's CPU. The caller's stdin is then spooled
  whole (one `dd`, whose byte count must match) before the command starts, so a connection that
  drops while sending it can never start the command on half a prompt, and the command sees EOF.
- stdout: one line "<tag> start <pgid>" once the command runs; the driver strips it (and anything a
  shell rc file printed before it). If the cwd is missing the line is "<tag> cwd_not_found"; if the
  run's spool cannot be made, "<tag> spool_failed" or "<tag> spool_exists" (a second start of the
  same run: refused). The tag carries a per-run nonce so command output cannot forge it by accident.
- then the command's stdout and stderr, passed on by the two tees that also write the spool
  (ssh_spool.py), and at the end the waiter's exit status, which is the command's.
The command runs detached from the SSH session: `setsid` (where the device has it) gives it its own
session and process group, which timeout and cancel kill (`kill -s TERM -- -PGID` from a second
channel) while the wrapper, left as the waiter, outlives the kill to record the status. Nothing it
writes goes to the channel directly, so a dropped connection or a dead worker does not touch it.
Without setsid the command stays in the wrapper's group (the sshd session's), as before.
"""
from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

from . import ssh_spool
from ._common import validate_env
from .ssh_facts import DeviceFacts

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
# A stdin this small (and without NUL, which a shell variable cannot hold) travels inside the env
# script, as this variable, which the wrapper evaluates itself and writes to the spool with printf:
# reading it a byte at a time costs less than the `dd` a larger stdin is spooled with (~1 ms each).
_IN_VAR = "__agentruns_in"
INLINE_STDIN_MAX = 2048
# Shells known to take `-lc SCRIPT NAME ARGS...` with POSIX quoting; anything else (fish, csh,
# nologin...) falls back to /bin/sh -l.
_POSIX_SHELLS = "*/bash|*/zsh|*/ksh|*/mksh|*/dash|*/ash|*/sh"
_LOGIN_INNER = f'{_SET_NL}; eval "${ENV_VAR}"; unset {ENV_VAR} {_NL_VAR}; exec "$@"'


def tag(nonce: str) -> str:
    """The marker prefix of the wrapper's protocol line for one run."""
    return f"__agentruns_{nonce}"


def env_script(env: dict[str, str], stdin: bytes = b"") -> bytes:
    """`export NAME=<quoted value>` lines for the wrapper to eval, ending in the sentinel line; a
    small stdin goes first, as a line of its own (see inline_stdin)."""
    validate_env(env)
    lines = "".join(f"export {name}={_quote(value)}\n" for name, value in env.items())
    # Bytes as latin-1 characters: quoting only adds quotes, so every byte comes back as it was.
    first = f"{_IN_VAR}={_quote(stdin.decode('latin-1'))}\n".encode("latin-1") if stdin else b""
    return first + (lines + ENV_END + "\n").encode()


def _quote(value: str) -> str:
    # shlex.quote keeps every newline inside single quotes: spell them as the newline variable.
    return shlex.quote(value).replace("\n", f"'\"${_NL_VAR}\"'")


def inline_stdin(stdin: bytes) -> bool:
    """True when stdin travels inside the env script (small, no NUL) rather than after it."""
    return 0 < len(stdin) <= INLINE_STDIN_MAX and b"\0" not in stdin


def stdin_payload(env: dict[str, str], stdin: bytes) -> bytes:
    """What the driver writes to the channel: the env script, then the caller's stdin (or within it)."""
    return env_script(env, stdin) if inline_stdin(stdin) else env_script(env) + stdin


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
    spool_key: str | None = None,
    stdin_len: int = 0,
    stdin_inline: bool = False,
    spool_cap: int = ssh_spool.spool_cap(1024 * 1024),
    facts: DeviceFacts | None = None,
    stdin_file: str | None = None,
) -> str:
    """The exec request string: `exec /bin/sh -c '<wrapper>'`, every user part shlex-quoted.

    backstop: if set and `timeout` (GNU or busybox) exists on the device, the command is also wrapped in
    `timeout -s TERM -k <grace> <backstop>` so it dies even if this worker vanishes mid-run.
    spool_key names the run's spool (default: the nonce); stdin_len is how many bytes of stdin come,
    inside the env script (stdin_inline) or after it; spool_cap bounds each spooled stream (ssh_spool.py).
    stdin_file: the name of an environment variable to export to the command, set to the path of a
    copy of its stdin in the spool (mode 600), made by builtins for a small stdin.
    facts (ssh_facts.py): what the device offers, if known. With a POSIX login shell and GNU `timeout`
    the wrapper is `exec <login shell> -lc '<wrapper>'` and starts the command itself, under a
    `timeout` that is its process group leader: two programs fewer per run (`/bin/sh`, `setsid`).
    """
    if not argv:
        raise ValueError("argv must not be empty")
    if not isinstance(stdin_len, int) or stdin_len < 0:
        raise ValueError(f"invalid stdin length {stdin_len!r}")
    if stdin_file is not None:
        validate_env({stdin_file: ""})
    t = tag(nonce)
    key = shlex.quote(ssh_spool.check_key(spool_key or nonce))
    p = '"$__agentruns_p"'
    lines = [
        _SET_NL,
        # `read` takes a pipe a byte at a time, so the caller's stdin after the sentinel is left
        # intact for the command. No sentinel (the connection died while sending): never run.
        "__agentruns_s= __agentruns_ok=",
        f"while IFS= read -r __agentruns_l; do case $__agentruns_l in {shlex.quote(ENV_END)}) "
        f"__agentruns_ok=1; break ;; {_IN_VAR}=*) eval \"$__agentruns_l\"; continue ;; esac; "
        f"__agentruns_s=$__agentruns_s$__agentruns_l${_NL_VAR}; done",
        '[ -n "$__agentruns_ok" ] || exit 97',
        f"cd {remote_cwd(cwd)} 2>/dev/null || {{ {ssh_spool.say(t, 'cwd_not_found')}; exit 96; }}",
        # The run's stdin file, created exclusively (noclobber is a builtin redirect, where a
        # directory per run cost a `mkdir`): a second start of the same run refuses here. A spool
        # directory of the layout before is a start too. `true`, not `:`: a failed redirect of a
        # special builtin ends the shell.
        f"__agentruns_r={ssh_spool.SPOOL_ROOT} __agentruns_p={ssh_spool.SPOOL_ROOT}/{key}.",
        f'[ -d "$__agentruns_r"/{key} ] && {{ {ssh_spool.say(t, "spool_exists")}; exit 95; }}',
        "set -C",
        f"if ! {{ true > {p}in; }} 2>/dev/null; then",
        f'  [ -e {p}in ] && {{ {ssh_spool.say(t, "spool_exists")}; exit 95; }}',
        '  mkdir -p -m 700 "$__agentruns_r" 2>/dev/null',
        f'  {{ true > {p}in; }} 2>/dev/null || {{ {ssh_spool.say(t, "spool_failed")}; exit 95; }}',
        "fi",
        "set +C",
    ]
    if stdin_len and stdin_inline:
        lines.append(f"printf '%s' \"${_IN_VAR}\" > {p}in")
    elif stdin_len:
        # dd's last line starts with the byte count ("N bytes ...", "1 byte ..."): a short count
        # means the connection dropped while stdin came.
        lines += [
            f"__agentruns_n=$(LC_ALL=C dd of={p}in bs=65536 2>&1)",
            f"case $__agentruns_n in *\"${_NL_VAR}\"'{stdin_len} byte'*) ;; "
            f"*) {{ set -C; printf -- '- -\\nnever\\n' > {p}pgid; }} 2>/dev/null; exit 97 ;; esac",
        ]
    if stdin_file is not None:
        # The copy of stdin as a file: private whatever the login shell's umask (which the command
        # keeps: hence the subshell), written by a builtin when stdin came inside the env script.
        source = (f"printf '%s' \"${_IN_VAR}\"" if stdin_len and stdin_inline
                  else f"exec cat < {p}in" if stdin_len else "true")
        lines.append(f"{{ (umask 077; {source} > {p}prompt); }} 2>/dev/null || "
                     f"{{ {ssh_spool.say(t, 'spool_failed')}; exit 95; }}")
    if stdin_len and stdin_inline:
        lines.append(f"unset {_IN_VAR}")
    lines += [
        # Creating the pgid file exclusively claims the start against an attach that finds no start
        # (the attach creates it first, and the start refuses).
        f"mkfifo {p}o {p}e 2>/dev/null && {{ set -C; {{ true > {p}pgid; }} 2>/dev/null; }} || "
        f"{{ set +C; {ssh_spool.say(t, 'spool_failed')}; exit 95; }}",
        "set +C",
    ]
    if stdin_file is not None:
        # Exported by the wrapper, so every way of starting the command below passes it on.
        lines.append(f'{stdin_file}="$__agentruns_p"prompt; export {stdin_file}')
    limit = None if backstop is None else f"-s TERM -k {max(1, math.ceil(kill_grace))} {max(1, math.ceil(backstop))}"
    group = _known_group(facts, limit)
    inside = bool(group and login_shell and facts and facts.posix_login_shell)
    if group is not None:
        # The device is known: `timeout` (GNU) or `setsid` makes the run's process group, no probing.
        lines.append(f"__agentruns_x= __agentruns_t={shlex.quote(group)} __agentruns_own=1")
    else:
        lines += ["__agentruns_t= __agentruns_x= __agentruns_own=",
                  "command -v setsid >/dev/null 2>&1 && __agentruns_x=setsid __agentruns_own=1"]
        if limit is not None:
            # `command -v` is a builtin: probing with `timeout --version` cost a fork and exec per run.
            lines.append(f'if command -v timeout >/dev/null 2>&1; then __agentruns_t="timeout {limit}"; fi')
    # `ulimit -f` counts 512-byte blocks, except in bash outside its POSIX mode (not as `sh`): 1024.
    blocks = max(1, spool_cap // (1024 if inside and facts and facts.shell.endswith("/bash") else 512))
    quoted_argv = " ".join(shlex.quote(a) for a in argv)
    redirects = f"< {p}in > {p}o 2> {p}e &"
    if inside:
        # The wrapper is the login shell: the command inherits its environment, with the run's env
        # evaluated in the command's own subshell. A profile may have changed IFS: split by default.
        lines += ["unset IFS",
                  f'(eval "$__agentruns_s"; exec $__agentruns_t {quoted_argv}) {redirects}']
    elif login_shell:
        lines += [
            f'case "${{SHELL:-}}" in {_POSIX_SHELLS}) __agentruns_sh=$SHELL ;; *) __agentruns_sh=/bin/sh ;; esac',
            f'{ENV_VAR}=$__agentruns_s $__agentruns_x $__agentruns_t "$__agentruns_sh" -lc '
            f"{shlex.quote(_LOGIN_INNER)} agentruns {quoted_argv} {redirects}",
        ]
    else:
        # The env is evaluated in the command's own subshell: it cannot change the wrapper's PATH.
        lines.append(f'(eval "$__agentruns_s"; exec $__agentruns_x $__agentruns_t {quoted_argv}) {redirects}')
    lines += [
        # The command now waits to open its FIFOs until the tees read them, so nothing it prints can
        # come before the start line.
        "__agentruns_c=$! __agentruns_g=$$",
        '[ -n "$__agentruns_own" ] && __agentruns_g=$__agentruns_c',
        f"printf '%s %s\\n' \"$__agentruns_g\" \"$$\" > {p}pgid",
        # From here the wrapper only waits: a dropped channel must not end it (SIGPIPE on a write,
        # HUP), so both are caught, and a wait they interrupt is resumed.
        "trap '__agentruns_i=1' PIPE HUP",
        f"printf '%s %s\\n' {shlex.quote(t + ' start')} \"$__agentruns_g\"",
        f"{ssh_spool.say(t, 'stderr')} >&2",
        # The tees: SIGPIPE ignored (a dropped channel only ends the live copy), the spool capped
        # (past it, EFBIG ends only the file copy), /dev/null so they always drain the command.
        f"(trap '' PIPE XFSZ; ulimit -f {blocks} 2>/dev/null; exec tee -a {p}stdout /dev/null 2>/dev/null)"
        f" < {p}o & __agentruns_o=$!",
        f"(trap '' PIPE XFSZ; ulimit -f {blocks} 2>/dev/null; exec tee -a {p}stderr /dev/null >&2 2>/dev/null)"
        f" < {p}e & __agentruns_e=$!",
        'while :; do __agentruns_i=; wait "$__agentruns_c"; __agentruns_rc=$?; [ -n "$__agentruns_i" ] || break; done',
        'while :; do __agentruns_i=; wait "$__agentruns_o" "$__agentruns_e"; [ -n "$__agentruns_i" ] || break; done',
        # The exit status as the pgid file's second line: one small append, which a reader sees
        # whole or not at all (a `mv` of a temporary status file cost an exec).
        f"{{ printf '%s\\n' \"$__agentruns_rc\" >> {p}pgid; }} 2>/dev/null",
        # The status as the last command's, not by `exit`: a login shell that calls `exit` runs the
        # user's ~/.bash_logout (Debian's starts clear_console), which `ssh device command` never does.
        # (The refusals above still exit: rare, and harmless if the logout file runs then.)
        '__agentruns_end() { return "$1"; }',
        '__agentruns_end "$__agentruns_rc"',
    ]
    shell = facts.posix_login_shell if inside and facts else "/bin/sh"
    return f"exec {shlex.quote(shell)} {'-lc' if inside else '-c'} " + shlex.quote("\n".join(lines))


def _known_group(facts: DeviceFacts | None, limit: str | None) -> str | None:
    """The words that start the command in its own process group on a device whose facts are known
    (GNU `timeout` with the backstop, else `setsid`), or None to find out on the device."""
    if facts is None:
        return None
    if limit is not None:
        return f"{facts.gnu_timeout} {limit}" if facts.gnu_timeout else None
    return facts.setsid or None


def check_pgid(pgid: int) -> int:
    """pgid if it may be signalled as a process group: `kill -- -1` would signal every process of the
    device user."""
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid!r}")
    return pgid


def kill_command(pgids: Sequence[int], grace: float) -> str:
    """Remote command: TERM each group, wait up to `grace` for them to go, then KILL what is left.

    Prints "found <pgid>" for each group the TERM reached (none: the groups were already gone).
    One exec for all of a device's stops at that moment (ssh_kill.py): a thousand runs canceled at
    once cost one session per batch, not one each.
    """
    for pgid in pgids:
        check_pgid(pgid)
    if not pgids:
        raise ValueError("no process group to signal")
    ticks = max(1, math.ceil(grace * 10))
    script = "\n".join([
        f"G='{' '.join(str(p) for p in pgids)}'; F=",
        'for P in $G; do kill -s TERM -- "-$P" 2>/dev/null && { F="$F $P"; printf \'found %s\\n\' "$P"; }; done',
        '[ -n "$F" ] || exit 0',
        # `kill -0` is a builtin, so polling with it costs no process: groups that die on TERM cost
        # nothing more. But it also counts zombies, and where PID 1 reaps lazily (containers) the
        # dead children stay zombies: after a few ticks, ask ps whether a live member is left, so a
        # stopped run does not always cost the whole grace period (one ps per tick for the batch).
        "if command -v ps >/dev/null 2>&1 && command -v awk >/dev/null 2>&1; then",
        "  live() { ps -eo pgid=,stat= 2>/dev/null"
        " | awk -v g=\"$F\" 'BEGIN { n = split(g, a, \" \"); for (i = 1; i <= n; i++) w[a[i]] = 1 }"
        " ($1 in w) && $2 !~ /^Z/ { f = 1 } END { exit !f }'; }",
        "else",
        "  live() { return 0; }",
        "fi",
        'any() { for P in $F; do kill -s 0 -- "-$P" 2>/dev/null && return 0; done; return 1; }',
        "i=0",
        f'while [ "$i" -lt {ticks} ] && any; do',
        '  if [ "$i" -ge 3 ] && ! live; then break; fi',
        "  sleep 0.1; i=$((i+1))",
        "done",
        'for P in $F; do kill -s KILL -- "-$P" 2>/dev/null; done',
        "exit 0",
    ])
    return "exec /bin/sh -c " + shlex.quote(script)
