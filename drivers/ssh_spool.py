"""The run's spool on the device, and the small POSIX sh scripts that re-attach to it and remove it.

A run's command runs detached from its SSH session (ssh_script.build_command): its stdout and stderr
pass through one `tee` each into `$HOME/.agentruns/spool/<key>.stdout` and `.stderr` (and to the
channel while one is connected), and its exit status is recorded at the end. So a dropped
connection or a dead worker costs nothing: another connection reads the spool on from its offsets.

    $HOME/.agentruns/spool/          0700, created by the first run
        <key>.in                     the caller's stdin, spooled whole before the command starts;
                                     created exclusively (noclobber): a second start refuses
        <key>.prompt                 a copy of it, mode 600, for a command that asked for its stdin
                                     as a file too (the custom provider's AGENTRUNS_PROMPT_FILE)
        <key>.o, <key>.e             FIFOs the command writes and the tees read
        <key>.stdout, <key>.stderr   everything the command printed, up to the spool cap each
        <key>.pgid                   "<process group> <waiter pid>", and once the run is over a second
                                     line, its exit status, appended when both tees have finished;
                                     "- -" and "never" for a run that never started. Created
                                     exclusively: the start and an attach that finds no start race
                                     for it, the loser refuses

Every file of a run is created by a shell redirect, a builtin, and has a fixed name (so the
removal names them: no glob that reads the whole spool directory per run): the layout before (a
directory per run, the status written to a temporary file and renamed) cost a `mkdir` and a `mv`, a
tenth of a no-op run's CPU on its device. A run started under that layout (`<key>/stdin`,
`<key>/status` holding the status) is still attached to and removed.

The cap: each tee runs under `ulimit -f` (the spool cap, SPOOL_CAP_FACTOR times the output cap), so
a command printing without end cannot fill the device's disk. Past the cap the spool stops growing
while the tee goes on feeding the live channel and /dev/null: the command keeps running as before,
and a connected worker still sees (and keeps the head and tail of) everything. Only a re-attach after
a drop reads the spool, so only then is output past the cap lost (the stream is marked truncated).
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

SPOOL_ROOT = '"$HOME"/.agentruns/spool'
SPOOL_CAP_FACTOR = 64  # the spool keeps this many times the output cap per stream
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
# A spool whose run ended (or never came back) this long ago is swept; runs last at most a day.
STALE_DAYS = 2


def check_key(key: str) -> str:
    """Return key if it can name a spool directory (it appears quoted in scripts all the same)."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"invalid spool key {key!r}")
    return key


def spool_cap(output_cap: int) -> int:
    """Bytes each spooled stream may reach on the device: a multiple of 512 (ulimit -f counts blocks)."""
    return max(1024 * 1024, SPOOL_CAP_FACTOR * output_cap + 511) // 512 * 512


def say(tag: str, *words: str) -> str:
    """A protocol line on stdout: `<tag> <word>...` (the driver looks for the tag)."""
    return f"printf '%s\\n' {shlex.quote(' '.join((tag, *words)))}"


# A run's spool files (this layout), after "<key>.": "prompt" is the copy of stdin a command asked
# for as a file (ExecRequest.stdin_file_env).
SPOOL_FILES = ("in", "o", "e", "stdout", "stderr", "pgid", "prompt")


def _locate(key: str) -> list[str]:
    """Shell lines that set p, the prefix of key's spool files (either layout), and define `ended`,
    which is true once the run has a status, then in S."""
    k = shlex.quote(check_key(key))
    return [
        f"p=$r/{k}.; o=; [ -d \"$r\"/{k} ] && p=$r/{k}/ o=1",
        # This layout: the pgid file's second line, complete with its newline; the layout before: a
        # status file (renamed into place whole).
        'ended() { S=; if [ -n "$o" ]; then [ -e "${p}status" ] && { read -r S < "${p}status" || S=-; }; '
        'else { read -r _ _ && read -r S; } < "${p}pgid" 2>/dev/null || S=; fi; [ -n "$S" ]; }',
    ]


def attach_command(key: str, tag: str, stdout_from: int, stderr_from: int) -> str:
    """Re-attach to the spool of run `key`, printing its output from the given byte offsets.

    stdout: "<tag> attached <pgid>" (or "<tag> gone" when the run never started or its spool is
    gone), then stdout from the offset, then a last line "\\n<tag> end <status>" once the run is
    over ("-" for a waiter that died without one), or "\\n<tag> more" when the caller should attach
    again (the run ended while this attach followed it). stderr: the run's stderr from its offset.
    A run that never started is fenced off here: its pgid file is created by whoever comes first,
    so a start still on its way refuses to run the command.
    """
    for offset in (stdout_from, stderr_from):
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"invalid offset {offset!r}")
    gone = say(tag, "gone")
    script = "\n".join([
        f"r={SPOOL_ROOT}",
        *_locate(key),
        '[ -d "$r" ] || mkdir -p -m 700 "$r" 2>/dev/null',
        # First to create the pgid file wins: the start then refuses to run.
        f"if (set -C; printf -- '- -\\nnever\\n' > \"${{p}}pgid\") 2>/dev/null; then {gone}; exit 0; fi",
        # The start claimed it a moment ago and is about to write it.
        'i=0; P=; read -r P W < "${p}pgid" 2>/dev/null',
        'while [ -z "$P" ] && ! ended && [ "$i" -lt 5 ]; do',
        '  sleep 1; read -r P W < "${p}pgid" 2>/dev/null; i=$((i+1))',
        "done",
        f'case $P in ""|-) {gone}; exit 0 ;; esac',  # "-": a start that refused before the command
        f"printf '%s %s\\n' {shlex.quote(tag + ' attached')} \"$P\"",
        f"{say(tag, 'stderr')} >&2",
        'if ! ended && kill -0 "$W" 2>/dev/null; then',
        # Follow until the run ends (or our channel goes: then tail exits), then let the caller
        # read the rest in one go: a follower stopped midway cannot say how much it passed on.
        f'  tail -c +{stdout_from + 1} -f "${{p}}stdout" 2>/dev/null & F=$!',
        f'  tail -c +{stderr_from + 1} -f "${{p}}stderr" >&2 2>/dev/null & G=$!',
        '  while ! ended && kill -0 "$W" 2>/dev/null && kill -0 "$F" 2>/dev/null; do sleep 1; done',
        '  kill "$F" "$G" 2>/dev/null; wait',
        f"  printf '\\n%s\\n' {shlex.quote(tag + ' more')}; exit 0",
        "fi",
        f'tail -c +{stdout_from + 1} "${{p}}stdout" 2>/dev/null',
        f'tail -c +{stderr_from + 1} "${{p}}stderr" >&2 2>/dev/null',
        "ended || S=-",
        f"printf '\\n%s %s\\n' {shlex.quote(tag + ' end')} \"$S\"",
    ])
    return "exec /bin/sh -c " + shlex.quote(script)


def cleanup_command(keys: Sequence[str], stop: Sequence[str] = (), sweep: bool = False) -> str:
    """Remove the spools of runs whose result is recorded (one `rm` for all of them).

    stop: keys whose command may still run (a run given up while its device was unreachable): their
    process group and waiter, as the spool names them, are killed first unless the run has ended.
    sweep: also remove spools untouched for STALE_DAYS (their runs ended long ago, and nobody came
    back for them).
    """
    # Both layouts: a directory per run, or the run's files side by side, each by its name.
    quoted = [shlex.quote(check_key(k)) for k in keys]
    names = " ".join(" ".join([k, *(f"{k}.{f}" for f in SPOOL_FILES)]) for k in quoted)
    lines = [f"r={SPOOL_ROOT}; cd \"$r\" 2>/dev/null || exit 0"]
    for key in stop:
        # The group and its waiter (which would otherwise record a status into the spool being
        # removed), then wait for the waiter to be gone.
        lines += [*_locate(key),
                  'P=; ended || read -r P W < "${p}pgid" 2>/dev/null; '
                  'if [ "${P:-0}" -gt 1 ] 2>/dev/null && [ "${W:-0}" -gt 1 ] 2>/dev/null; then '
                  'kill -s KILL -- "-$P" "$W" 2>/dev/null; i=0; '
                  'while kill -0 "$W" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; fi']
    if names:
        lines.append(f"rm -rf -- {names}")
    if sweep:
        lines.append(f"find . ! -name . -prune -mtime +{STALE_DAYS - 1} -exec rm -rf {{}} + 2>/dev/null")
    lines.append("exit 0")
    return "exec /bin/sh -c " + shlex.quote("\n".join(lines))
