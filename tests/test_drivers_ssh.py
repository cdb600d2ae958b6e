"""The ssh driver against a real OpenSSH sshd on loopback (fixtures in tests/conftest_sshd.py)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from drivers import get_driver, ssh_facts, ssh_script, ssh_spool
from drivers.base import (
    AUTH_FAILED,
    CWD_NOT_FOUND,
    DEVICE_LOST,
    DEVICE_UNREACHABLE,
    HOST_KEY_MISMATCH,
    HOST_KEY_UNKNOWN,
    REMOTE_SETUP_FAILED,
    AttachTicket,
    DriverError,
    ExecRequest,
)
from drivers.ssh import SSHDriver
from drivers.ssh_pool import TransportPool
from providers import RunSpec, get_provider
from tests.sshd import free_port, keygen
from tests.test_drivers_local import BIG, TRICKY, unique_marker

FAST_RETRY = (0.05,)


def run(driver, argv, *, on_output=None, on_start=None, cancel=None, **kw):
    """driver.run; the run's spool goes afterwards (as a worker removes it once the result is recorded)
    unless the test names it to look at it."""
    kw.setdefault("cwd", "/tmp")
    own_key = "spool_key" not in kw
    kw.setdefault("spool_key", f"t-{uuid.uuid4().hex}")
    try:
        return driver.run(ExecRequest(argv=argv, **kw), on_output=on_output, on_start=on_start, cancel=cancel)
    finally:
        if own_key:
            spool = Path(os.path.expanduser(f"~{driver.spec.username}")) / ".agentruns/spool"
            for name in ssh_spool.SPOOL_FILES:  # by name, as the janitor does: a glob reads the whole directory
                (spool / f"{kw['spool_key']}.{name}").unlink(missing_ok=True)


def run_in_thread(driver, argv, **kw):
    """Start a run in a thread; return (thread, result dict, event set once the pgid is known)."""
    started, out = threading.Event(), {}

    def go():
        try:
            out["res"] = run(driver, argv, on_start=lambda pgid: (out.setdefault("pgid", pgid), started.set()), **kw)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["err"] = exc
        started.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out, started


# Prints "before", waits for the file $1 to appear, then prints "after" and "err", and exits 7.
GATED = 'echo before; while [ ! -e "$1" ]; do sleep 0.05; done; echo after; echo err >&2; exit 7'


def wait_until(check, seconds: float = 10):
    """Poll check() until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        time.sleep(0.05)
    return value


def fingerprint_of(pub_line: str) -> str:
    """The SHA256 fingerprint as OpenSSH's own ssh-keygen prints it (an independent check)."""
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as f:
        f.write(pub_line + "\n")
        f.flush()
        out = subprocess.run(["ssh-keygen", "-lf", f.name], capture_output=True, text=True, check=True).stdout
        return out.split()[1]


@pytest.fixture()
def pool():
    p = TransportPool()
    yield p
    p.close()


@pytest.fixture(params=["login", "login-generic", "plain"])
def shape(request, monkeypatch) -> str:
    """How the wrapper starts the command: inside the login shell, as the device's facts allow
    (ssh_facts.py); through /bin/sh and `setsid`, as on a device whose probe failed; no login shell."""
    if request.param == "login-generic":
        monkeypatch.setattr(ssh_facts, "PROBE", "exec /bin/sh -c 'exit 1'")
    return request.param


@pytest.fixture()
def driver(sshd, pool) -> SSHDriver:
    return SSHDriver(sshd.spec(), pool=pool, retry_delays=FAST_RETRY)


def test_get_driver_picks_ssh(sshd):
    assert isinstance(get_driver(sshd.spec()), SSHDriver)


# Small stdin without NUL travels inside the env script (ssh_script.inline_stdin); the rest after it.
INLINE = TRICKY.replace(b"\0", b"") + f"\n{ssh_script.ENV_END}\nexport X=1\n'".encode() + bytes(range(1, 256)) + b"\n\n"


@pytest.mark.parametrize("payload", [TRICKY, INLINE, BIG, b""], ids=["tricky", "inline", "200KiB", "empty"])
def test_stdin_round_trip_is_byte_exact(sshd, pool, payload, shape):
    # `cat` only exits on EOF: this also proves stdin is closed, and that the pgid line is stripped.
    assert ssh_script.inline_stdin(payload) == (payload is INLINE)
    driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool)
    res = run(driver, ["cat"], stdin=payload, timeout=20)
    assert (res.exit_code, res.killed, res.stderr) == (0, None, b"")
    assert res.stdout == payload
    assert res.pgid > 1 and res.started_at <= res.finished_at


def test_the_login_environment_reaches_the_command(sshd, shape):
    """The device user's profile runs for the command (not for a plain device): Debian's ~/.profile
    puts ~/.local/bin first on PATH when it exists."""
    home = sshd.run_as_user("mkdir -p ~/.local/bin && cd ~ && pwd").stdout.strip()
    pool = TransportPool()
    try:
        driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool)
        path = run(driver, ["sh", "-c", 'printf %s "$PATH"']).stdout.decode().split(":")
        assert (f"{home}/.local/bin" in path) == (shape != "plain"), path
        facts = [c.facts for conns in pool._conns.values() for c in conns]
        # This test's device (Debian, bash, coreutils) is one the probe knows, unless it was made to fail.
        expected = ssh_facts.UNKNOWN if shape == "login-generic" else ssh_facts.DeviceFacts(
            "/bin/bash", facts[0].setsid, facts[0].gnu_timeout)
        assert facts == [expected] and (shape == "login-generic" or facts[0].gnu_timeout.endswith("/timeout"))
    finally:
        pool.close()


def test_a_run_leaves_the_logout_file_alone(sshd, pool, shape):
    """Like `ssh device command`, a run does not run the user's ~/.bash_logout: bash runs it when a
    login shell calls `exit`, and Debian's starts clear_console, a program per run for no terminal."""
    home = Path(os.path.expanduser(f"~{sshd.username}"))
    logout, flag = home / ".bash_logout", home / f".agentruns-logout-{uuid.uuid4().hex}"
    before = logout.read_text() if logout.exists() else None
    flag.write_text("")
    flag.chmod(0o666)  # made by the test's user, written by the device user
    try:
        with logout.open("a") as f:  # appended: the file keeps its owner
            f.write(f"\n[ -f {flag} ] && echo ran >> {flag}\n")
        driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool)
        res = run(driver, ["true"], stdin=b"prompt")
        assert (res.exit_code, flag.read_text()) == (0, "")
        # A login shell that calls `exit` does run it: the probe is live.
        sshd.run_as_user(f"HOME={home} bash -lc 'exit 0' </dev/null")
        assert flag.read_text() == "ran\n"
    finally:
        if before is None:
            logout.unlink(missing_ok=True)
        else:
            logout.write_text(before)
        flag.unlink(missing_ok=True)


def test_the_wrapper_takes_what_the_device_offers():
    known = ssh_facts.parse(b"shell /bin/bash\nsetsid /usr/bin/setsid\ntimeout /usr/bin/timeout\n")
    assert known == ssh_facts.DeviceFacts("/bin/bash", "/usr/bin/setsid", "/usr/bin/timeout")
    assert ssh_facts.parse(b"shell /usr/bin/fish\ntimeout relative\n") == ssh_facts.DeviceFacts("/usr/bin/fish")
    kw = dict(login_shell=True, backstop=90, kill_grace=2, spool_key="run-1", spool_cap=2 * 1024 * 1024)
    # Known: the login shell is the wrapper, GNU timeout the group leader; no /bin/sh, no setsid.
    inside = ssh_script.build_command(["claude", "-p"], "/w", "n0nce", facts=known, **kw)
    assert inside.startswith("exec /bin/bash -lc ") and "setsid" not in inside
    script = shlex.split(inside)[3]
    assert "__agentruns_t='/usr/bin/timeout -s TERM -k 2 90'" in script and "ulimit -f 2048 " in script
    # Without GNU timeout, or with another login shell, or without facts: the generic wrapper.
    for facts in (ssh_facts.DeviceFacts("/bin/bash", "/usr/bin/setsid"), ssh_facts.DeviceFacts("/usr/bin/zsh"),
                  ssh_facts.UNKNOWN, None):
        generic = ssh_script.build_command(["claude", "-p"], "/w", "n0nce", facts=facts, **kw)
        assert generic.startswith("exec /bin/sh -c ") and "-lc" in generic, facts
        assert "ulimit -f 4096 " in shlex.split(generic)[3]
    # No backstop: setsid makes the group, named by the facts when known.
    plain = ssh_script.build_command(["true"], "/w", "n0nce", facts=known, **{**kw, "backstop": None})
    assert "/usr/bin/setsid" in plain and "command -v setsid" not in plain


def test_stdout_stderr_exit_code_and_argv_quoting(driver):
    arg = "it's $(echo no) `echo no` $HOME; echo injected"
    res = run(driver, ["sh", "-c", 'printf "%s" "$1"; printf err >&2; exit 5', "sh", arg])
    assert (res.stdout.decode(), res.stderr, res.exit_code) == (arg, b"err", 5)


def test_large_stdin_not_read_does_not_hang(driver):
    res = run(driver, ["true"], stdin=b"x" * (4 * 1024 * 1024), timeout=15)
    assert res.exit_code == 0 and res.killed is None


def test_env_names_the_wrapper_could_use_reach_the_command_unchanged(sshd, pool, shape):
    """Short names (t, s, l, ok...) are the user's: the wrapper's own variables are namespaced."""
    driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool)
    env = {"t": "echo hijacked", "s": "S", "l": "L", "ok": "", "sh_": "/bin/false", "agentruns_nl": "N",
           "MULTI": "a\nb"}
    res = run(driver, ["sh", "-c", 'printf "%s|" "$t" "$s" "$l" "$ok" "$sh_" "$agentruns_nl" "$MULTI"'], env=env)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.decode() == "echo hijacked|S|L||/bin/false|N|a\nb|"


def test_the_wrappers_own_prefix_is_refused_as_an_env_name(sshd, pool):
    driver = SSHDriver(sshd.spec(), pool=pool)
    with pytest.raises(ValueError, match="invalid environment variable name"):
        run(driver, ["true"], env={"__agentruns_t": "x"})


def test_env_reaches_the_command_but_not_any_command_line(sshd, pool, shape):
    secret, marker = f"s3cret-{uuid.uuid4().hex}", unique_marker()
    driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool)
    # A line of a value that reads like the env script's last line must not end it early.
    value = f"{secret} it's \"q\" $(id) `id`\nline2\n{ssh_script.ENV_END}\nexport OTHER=forged\n"
    cancel = threading.Event()
    t, out, started = run_in_thread(driver, ["sh", "-c", f'printf "%s" "$AGENTRUNS_SECRET"; sleep {marker}'],
                                    env={"AGENTRUNS_SECRET": value, "OTHER": "x"}, cancel=cancel)
    try:
        assert started.wait(10)
        deadline = time.monotonic() + 10
        while not sshd.pgrep(f"sleep {marker}") and time.monotonic() < deadline:
            time.sleep(0.05)
        # Every command line on the machine (device processes included), untruncated.
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        assert f"sleep {marker}" in ps and secret not in ps
        cmdlines = subprocess.run(["sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null"], capture_output=True).stdout
        assert marker.encode() in cmdlines and secret.encode() not in cmdlines
    finally:
        cancel.set()
    t.join(10)
    assert out["res"].stdout.decode() == value and out["res"].killed == "canceled"


def test_a_truncated_env_script_never_runs_the_command(tmp_path):
    # The wrapper run here by a local sh, as the device user's shell would: cut the env script
    # after every byte (the connection dying while it is sent).
    env = {"A": f"x\n{ssh_script.ENV_END}\ny", "B": "b"}
    command = ssh_script.build_command(["sh", "-c", 'printf "%s|%s" "$A" "$B" > out'], str(tmp_path), "n0nce",
                                       login_shell=False, backstop=None, kill_grace=1)
    script = ssh_script.env_script(env)
    home = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}  # the spool goes to $HOME
    for cut in range(len(script)):
        res = subprocess.run(["sh", "-c", command], input=script[:cut], capture_output=True, timeout=10, env=home)
        assert res.returncode == 97 and res.stdout == b"" and not (tmp_path / "out").exists(), cut
    res = subprocess.run(["sh", "-c", command], input=script, capture_output=True, timeout=10, env=home)
    assert res.returncode == 0 and (tmp_path / "out").read_text() == f"{env['A']}|b"


def test_a_truncated_stdin_never_runs_the_command(tmp_path):
    """The caller's stdin is spooled whole before the command starts: one byte short, it never does."""
    prompt = b"line one\nline two\n" * 50
    command = ssh_script.build_command(["sh", "-c", "cat > out"], str(tmp_path), "n0nce", login_shell=False,
                                       backstop=None, kill_grace=1, spool_key="stdin-cut", stdin_len=len(prompt))
    home = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    for cut in (0, 1, len(prompt) - 1):
        payload = ssh_script.env_script({}) + prompt[:cut]
        res = subprocess.run(["sh", "-c", command], input=payload, capture_output=True, timeout=10, env=home)
        assert res.returncode == 97 and res.stdout == b"" and not (tmp_path / "out").exists(), cut
        shutil.rmtree(tmp_path / "home")  # the refused start left its spool: a new attempt needs none
    res = subprocess.run(["sh", "-c", command], input=ssh_script.env_script({}) + prompt, capture_output=True,
                         timeout=10, env=home)
    assert res.returncode == 0 and (tmp_path / "out").read_bytes() == prompt


@pytest.mark.parametrize("size", ["inline", "70KB"])
def test_custom_provider_prompt_file_through_the_wrapper(sshd, pool, shape, size):
    """The custom provider's prompt file is the spool's copy of stdin: private, the same bytes, in the
    run's spool and removed with it; the command keeps the login shell's umask."""
    driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool)
    prompt = TRICKY.replace(b"\x00", b"").decode() + ("x" * 70_000 if size == "70KB" else "")
    inv = get_provider("custom").build(RunSpec(run_id="r1", prompt=prompt, command=(
        'umask; stat -c %a "$AGENTRUNS_PROMPT_FILE"; printf "%s\\n" "$AGENTRUNS_PROMPT_FILE"; '
        'cmp - "$AGENTRUNS_PROMPT_FILE" && echo same')))
    assert ssh_script.inline_stdin(inv.stdin) == (size == "inline")
    key = f"t-{uuid.uuid4().hex}"
    res = run(driver, inv.argv, env=inv.env, stdin=inv.stdin, timeout=20, spool_key=key,
              stdin_file_env=inv.stdin_file_env)
    mask, mode, path, same = res.stdout.decode().splitlines()
    assert (mode, same, res.exit_code) == ("600", "same", 0), res.stderr
    assert mask == run(driver, ["sh", "-c", "umask"]).stdout.decode().strip()
    home = sshd.run_as_user(f"cd ~{sshd.username} && pwd").stdout.strip()
    assert path == f"{home}/.agentruns/spool/{key}.prompt"
    driver.discard(key)  # as the worker does once the result is recorded: the prompt file goes with it
    wait_until(lambda: sshd.run_as_user(f"test -e {path} || test -e {path[:-len('prompt')]}in || echo gone").stdout)


def test_custom_provider_prompt_file_without_the_drivers_copy(sshd, pool):
    """A driver that does not set the variable (or a caller that does not ask): the provider's own
    temp file, removed when the command ends."""
    driver = SSHDriver(sshd.spec(), pool=pool)
    inv = get_provider("custom").build(RunSpec(run_id="r1", prompt="hello", command=(
        'stat -c %a "$AGENTRUNS_PROMPT_FILE"; printf "%s\\n" "$AGENTRUNS_PROMPT_FILE"; '
        'cmp - "$AGENTRUNS_PROMPT_FILE" && echo same')))
    res = run(driver, inv.argv, env=inv.env, stdin=inv.stdin, timeout=20)
    mode, path, same = res.stdout.decode().splitlines()
    assert (mode, same, res.exit_code) == ("600", "same", 0), res.stderr
    assert path.startswith("/tmp/agentruns-prompt.")
    assert sshd.run_as_user(f"test -e {path} || echo gone").stdout == "gone\n"


def test_the_stdin_file_variable_must_be_a_name():
    for bad in ("A B", "X;rm", "__agentruns_p", ""):
        with pytest.raises(ValueError):
            ssh_script.build_command(["true"], "/tmp", "n0nce", login_shell=True, backstop=None, kill_grace=2,
                                     stdin_file=bad)


def test_invalid_env_name_is_refused_before_connecting(driver):
    with pytest.raises(ValueError):
        run(driver, ["true"], env={"BAD-NAME": "x"})


@pytest.mark.parametrize("cwd, expected", [
    ("~", ""), ("/tmp", "/tmp"), ("~/agentruns test's dir", "/agentruns test's dir"),
    ("agentruns test's dir", "/agentruns test's dir"),  # relative paths start in the home directory
])
def test_cwd(driver, sshd, cwd, expected):
    home = sshd.run_as_user("mkdir -p ~/\"agentruns test's dir\" && cd ~ && pwd").stdout.strip()
    want = expected if expected.startswith("/tmp") else home + expected
    assert run(driver, ["pwd"], cwd=cwd).stdout.decode().strip() == want


def test_missing_cwd_is_a_before_start_error(driver):
    with pytest.raises(DriverError) as err:
        run(driver, ["true"], cwd=f"/nonexistent/{uuid.uuid4().hex}/it's")
    assert err.value.code == CWD_NOT_FOUND and err.value.before_start


def test_output_cap_and_streaming(driver):
    chunks = []
    script = "head -c 6000 /dev/zero | tr '\\0' a; head -c 4000 /dev/zero | tr '\\0' z; sleep 0.5; echo end >&2"
    res = run(driver, ["sh", "-c", script], output_cap=1000,
              on_output=lambda s, c: chunks.append((time.monotonic(), s, c)))
    done = time.monotonic()
    assert res.stdout == b"a" * 500 + b"z" * 500 and res.stdout_truncated
    assert res.stderr == b"end\n" and not res.stderr_truncated
    assert b"".join(c for _, s, c in chunks if s == "stdout") == b"a" * 6000 + b"z" * 4000
    assert done - chunks[0][0] > 0.3  # output arrived while the command was still running


@pytest.mark.parametrize("backstop", [False, True], ids=["group-kill", "with-remote-timeout"])
def test_timeout_kills_the_whole_tree_on_the_device(sshd, pool, shape, backstop):
    # Without the backstop this is the driver's own `kill -- -PGID`; GNU timeout alone would also
    # signal the group, which must not hide a broken group kill.
    driver = SSHDriver(sshd.spec(login_shell=shape != "plain"), pool=pool, timeout_backstop=backstop)
    marker = unique_marker()
    # A TERM-ignoring child with its output elsewhere (it does not hold the channel open) and a
    # grandchild behind a subshell.
    script = (f"sh -c 'trap \"\" TERM; exec sleep {marker}' >/dev/null 2>&1 & "
              f"(sleep {marker}; true) & sleep {marker}")
    start = time.monotonic()
    res = run(driver, ["sh", "-c", script], timeout=1, kill_grace=0.5)
    elapsed = time.monotonic() - start
    assert res.killed == "timeout" and res.exit_code is None and res.pgid
    assert 1 <= elapsed < 5
    assert sshd.pgrep(marker) == []


def test_cancel_stops_the_run_within_two_seconds(driver, sshd):
    marker = unique_marker()
    cancel = threading.Event()
    t, out, started = run_in_thread(driver, ["sh", "-c", f"sleep {marker} & sleep {marker}"],
                                    cancel=cancel, timeout=60)
    try:
        assert started.wait(10) and "err" not in out
        assert sshd.pgrep(marker)
    finally:
        cancel.set()
    t0 = time.monotonic()
    t.join(5)
    assert time.monotonic() - t0 < 2
    assert out["res"].killed == "canceled" and out["res"].exit_code is None
    assert sshd.pgrep(marker) == []


def test_kill_group_from_another_connection(driver, sshd):
    marker = unique_marker()
    t, out, started = run_in_thread(driver, ["sleep", marker], timeout=60)
    assert started.wait(10)
    other = SSHDriver(sshd.spec(), pool=TransportPool())  # like the reaper in another process
    try:
        assert other.kill_group(out["pgid"], grace=0.5) is True
        t.join(5)
        assert out["res"].exit_code is None and out["res"].killed is None  # died of a signal
        assert other.kill_group(out["pgid"], grace=0.5) is False
    finally:
        other.pool.close()
    assert sshd.pgrep(marker) == []


def test_many_groups_stopped_at_once_go_in_few_execs(driver, sshd, monkeypatch):
    """Twelve stops asked for together: one kill exec for the first, one for the rest that waited
    for it (ssh_kill.py); each group found and gone, and a second stop finds none."""
    marker = unique_marker()
    runs = [run_in_thread(driver, ["sleep", marker], timeout=60) for _ in range(12)]
    for _, out, started in runs:
        assert started.wait(10) and "err" not in out
    other = SSHDriver(sshd.spec(), pool=TransportPool())
    scripts: list[str] = []
    real = other._run_short
    monkeypatch.setattr(other, "_run_short", lambda command, **kw: (scripts.append(command), real(command, **kw))[1])
    try:
        with ThreadPoolExecutor(12) as pool:
            found = list(pool.map(lambda r: other.kill_group(r[1]["pgid"], grace=0.5), runs))
        assert found == [True] * 12 and 1 <= len(scripts) <= 3
        for t, out, _ in runs:
            t.join(5)
            assert out["res"].exit_code is None
        assert sshd.pgrep(marker) == []
        assert other.kill_group(runs[0][1]["pgid"], grace=0.5) is False
    finally:
        other.pool.close()


def test_a_dropped_connection_is_resumed_with_the_whole_output(driver, sshd):
    """The command runs detached: closing every transport mid-run only makes the run re-attach."""
    go, chunks = f"/tmp/agentruns-go-{uuid.uuid4().hex}", []
    t, out, started = run_in_thread(driver, ["sh", "-c", GATED, "sh", go], timeout=60,
                                    on_output=lambda s, c: chunks.append((s, c)))
    assert started.wait(10)
    wait_until(lambda: b"before" in b"".join(c for s, c in chunks))
    for transport in driver.pool.transports(driver.pool_key):
        transport.close()
    time.sleep(0.3)  # the command goes on meanwhile (nothing to wait for: this only widens the gap)
    sshd.run_as_user(f"touch {go}")
    t.join(15)
    res = out["res"]
    assert (res.stdout, res.stderr, res.exit_code, res.killed) == (b"before\nafter\n", b"err\n", 7, None)
    # Live output too: each byte once, in order.
    assert b"".join(c for s, c in chunks if s == "stdout") == b"before\nafter\n"
    assert res.pgid == out["pgid"]


def spool_of(sshd, key: str) -> str:
    """The prefix of the run's spool files on the device (ssh_spool.py)."""
    return f"$HOME/.agentruns/spool/{key}."


def spool_gone(sshd, key: str) -> bool:
    return sshd.run_as_user(f"ls -d {spool_of(sshd, key)}* 2>/dev/null | wc -l").stdout.strip() == "0"


def test_a_detached_run_is_attached_again_by_another_driver_with_its_whole_output(driver, sshd):
    """As after a worker's death: the run lets go (detach), the command ends alone, another process
    attaches with a ticket. The result holds the whole output; live output resumes where the ticket
    says it stopped. (Attaching while the command still runs: test_reattach.py, test_e2e_failures.py.)"""
    key, go = f"t-{uuid.uuid4().hex}", f"/tmp/agentruns-go-{uuid.uuid4().hex}"
    detach, first, out = threading.Event(), [], {}
    req = ExecRequest(argv=["sh", "-c", GATED, "sh", go], cwd="/tmp", timeout=60, spool_key=key)
    t = threading.Thread(target=lambda: out.setdefault("res", driver.run(
        req, on_output=lambda s, c: first.append(c), on_start=lambda p: out.setdefault("pgid", p), detach=detach)))
    t.start()
    wait_until(lambda: b"".join(first) == b"before\n")
    detach.set()
    t.join(5)
    assert out["res"].killed == "detached" and out["res"].stdout == b"before\n"
    # The command ends while nobody follows it: the attach finds its result in the spool.
    sshd.run_as_user(f"touch {go}")
    wait_until(lambda: sshd.run_as_user(f"sed -n 2p {spool_of(sshd, key)}pgid").stdout == "7\n")
    other = SSHDriver(sshd.spec(), pool=TransportPool(), retry_delays=FAST_RETRY)  # like another worker
    try:
        live: list[tuple[str, bytes]] = []
        ticket = AttachTicket(out["pgid"], None, emitted_stdout=len(b"before\n"))
        out["again"] = other.attach(ExecRequest(argv=["(attach)"], cwd="/tmp", timeout=60, spool_key=key), ticket,
                                    on_output=lambda s, c: live.append((s, c)))
        res = out["again"]
        assert (res.stdout, res.stderr, res.exit_code, res.killed, res.pgid) == (
            b"before\nafter\n", b"err\n", 7, None, out["pgid"])
        assert b"".join(c for s, c in live if s == "stdout") == b"after\n"
        assert b"".join(c for s, c in live if s == "stderr") == b"err\n"
        # Once the result is recorded the spool goes (in the background).
        other.discard(key)
        wait_until(lambda: spool_gone(sshd, key))
    finally:
        other.pool.close()


def test_a_run_spooled_under_the_layout_before_is_attached_to_and_removed(driver, sshd):
    """A run started by a worker of the release before (a directory per run, `status` holding the
    exit status) is still followed to its end by an upgraded worker, and its spool removed."""
    key = f"t-{uuid.uuid4().hex}"
    old = f"$HOME/.agentruns/spool/{key}"
    sshd.run_as_user(f"mkdir -p -m 700 {old} && printf 'before\\nafter\\n' > {old}/stdout && "
                     f"printf 'err\\n' > {old}/stderr && echo '4242 1' > {old}/pgid && echo 7 > {old}/status")
    res = driver.attach(ExecRequest(argv=["(attach)"], cwd="/tmp", timeout=30, spool_key=key),
                        AttachTicket(4242, None, emitted_stdout=len(b"before\n")))
    assert (res.stdout, res.stderr, res.exit_code, res.pgid) == (b"before\nafter\n", b"err\n", 7, 4242)
    driver.discard(key)
    wait_until(lambda: sshd.run_as_user(f"test -e {old} || echo gone").stdout == "gone\n")


def test_a_run_is_never_started_twice_on_one_spool(driver, sshd):
    key, counter = f"t-{uuid.uuid4().hex}", f"/tmp/agentruns-count-{uuid.uuid4().hex}"
    argv = ["sh", "-c", f"echo ran >> {counter}"]
    assert run(driver, argv, spool_key=key).exit_code == 0
    with pytest.raises(DriverError) as err:
        run(driver, argv, spool_key=key)
    assert err.value.code == REMOTE_SETUP_FAILED and not err.value.before_start
    assert sshd.run_as_user(f"cat {counter}").stdout == "ran\n"


def test_the_spool_is_capped_but_the_live_output_is_not(driver, sshd):
    """A command printing without end cannot fill the device's disk; a connected run still sees it all."""
    key = f"t-{uuid.uuid4().hex}"
    res = run(driver, ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; echo end"], output_cap=4096,
              spool_key=key)
    assert res.exit_code == 0 and res.stdout_truncated and res.stdout.endswith(b"a" * 100 + b"end\n")
    size = sshd.run_as_user(f"wc -c < {spool_of(sshd, key)}stdout").stdout
    assert int(size) == ssh_spool.spool_cap(4096) == 1024 * 1024
    driver.discard(key)  # 1 MiB of the device user's disk


def test_an_unreachable_device_is_given_up_after_the_limit_and_stopped_once_back(sshd):
    device = sshd.spawn()
    pool = TransportPool()
    driver = SSHDriver(device.spec(), pool=pool, retry_delays=(0.1,), device_lost_seconds=1.0)
    key, go, chunks, out = f"t-{uuid.uuid4().hex}", f"/tmp/agentruns-go-{uuid.uuid4().hex}", [], {}
    gated = 'echo before; while [ ! -e "$1" ]; do sleep 0.05; done; touch "$1.done"'
    req = ExecRequest(argv=["sh", "-c", gated, "sh", go], cwd="/tmp", timeout=60, spool_key=key)

    def go_run():
        try:
            driver.run(req, on_output=lambda s, c: chunks.append(c))
        except DriverError as exc:
            out["err"] = (exc, time.monotonic())

    t = threading.Thread(target=go_run, daemon=True)
    try:
        t.start()
        wait_until(lambda: b"before" in b"".join(chunks))
        device.cut()  # the listener and every connection's sshd die; the command goes on
        cut_at = time.monotonic()
        t.join(10)
        err, at = out["err"]
        assert err.code == DEVICE_LOST and err.pgid and not err.before_start
        assert 1.0 <= at - cut_at < 5
        # The command goes on where it is; once the device is back, forgetting the spool stops it.
        device.resume()
        driver.discard(key, err.pgid)
        wait_until(lambda: spool_gone(sshd, key))
        sshd.run_as_user(f"touch {go}")
        time.sleep(0.3)  # a command still alive would now write {go}.done
        assert sshd.run_as_user(f"test -e {go}.done || echo stopped").stdout == "stopped\n"
    finally:
        pool.close()
        device.stop()


def test_unreachable_port(sshd, pool):
    driver = SSHDriver(sshd.spec(port=free_port(), connect_timeout=2), pool=pool, retry_delays=FAST_RETRY)
    with pytest.raises(DriverError) as err:
        run(driver, ["true"])
    assert err.value.code == DEVICE_UNREACHABLE and err.value.before_start


def test_wrong_key_is_auth_failed_and_not_retried(sshd, pool, tmp_path):
    other_key = keygen(tmp_path / "k")[0]
    driver = SSHDriver(sshd.spec(private_key=other_key), pool=pool, retry_delays=(5.0,))
    start = time.monotonic()
    with pytest.raises(DriverError) as err:
        driver.ping()
    assert err.value.code == AUTH_FAILED and err.value.before_start
    assert time.monotonic() - start < 4  # a 5 s retry delay would show


def test_password_on_a_key_only_server_is_auth_failed(sshd, pool):
    driver = SSHDriver(sshd.spec(private_key=None, password="nope"), pool=pool, retry_delays=())
    with pytest.raises(DriverError) as err:
        driver.ping()
    assert err.value.code == AUTH_FAILED


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_all_key_types_authenticate(sshd, pool, kind):
    driver = SSHDriver(sshd.spec(private_key=sshd.client_keys[kind]), pool=pool)
    assert 0 < driver.ping() < 2


def test_changed_host_key_is_refused_before_auth(sshd, sshd_other_host_key, pool):
    spec = sshd.spec(port=sshd_other_host_key.port)  # still pinned to the first server's key
    driver = SSHDriver(spec, pool=pool, retry_delays=(5.0,))
    start = time.monotonic()
    with pytest.raises(DriverError) as err:
        run(driver, ["true"])
    assert err.value.code == HOST_KEY_MISMATCH and err.value.before_start
    assert time.monotonic() - start < 4  # not retried
    expected = fingerprint_of(sshd.host_key.split(None, 1)[1])
    seen = fingerprint_of(sshd_other_host_key.host_key.split(None, 1)[1])
    assert expected in err.value.message and seen in err.value.message and expected != seen
    assert "Accepted publickey" not in sshd_other_host_key.log()  # no credentials were offered


def test_no_pinned_key_is_refused(sshd, pool):
    driver = SSHDriver(sshd.spec(host_key=None), pool=pool)
    with pytest.raises(DriverError) as err:
        driver.ping()
    assert err.value.code == HOST_KEY_UNKNOWN
    assert sshd.host_key.split()[2] in err.value.message  # tells the operator what to pin


def test_trust_on_first_use_reports_the_key(sshd, pool):
    seen = []
    driver = SSHDriver(sshd.spec(host_key=None, trust_on_first_use=True), on_host_key=seen.append, pool=pool)
    driver.ping()
    run(driver, ["true"])
    assert len(seen) == 1
    assert seen[0].split()[1:] == sshd.host_key.split()[1:]
    # The reported line works as a pin, also without the host field.
    pinned = SSHDriver(sshd.spec(host_key=seen[0].split(None, 1)[1]), pool=pool)
    assert pinned.ping() > 0


def test_pool_reuses_one_transport(driver):
    run(driver, ["true"])
    first = driver.pool.transports(driver.pool_key)
    run(driver, ["true"])
    driver.ping()
    assert len(first) == 1 and driver.pool.transports(driver.pool_key) == first


def test_dead_transport_is_replaced(driver):
    run(driver, ["true"])
    [old] = driver.pool.transports(driver.pool_key)
    old.close()
    assert run(driver, ["echo", "again"]).stdout == b"again\n"
    [new] = driver.pool.transports(driver.pool_key)
    assert new is not old


def test_more_concurrent_runs_than_channels_per_transport(driver):
    start = time.monotonic()
    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda i: run(driver, ["sh", "-c", f"sleep 1; echo {i}"]), range(20)))
    elapsed = time.monotonic() - start
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(20)]
    assert elapsed < 6  # concurrent, not one after another
    assert len(driver.pool.transports(driver.pool_key)) >= 3  # 20 runs, at most 8 per transport


def test_server_session_limit_opens_another_transport(sshd, pool):
    strict = sshd.spawn(extra_config={"MaxSessions": "2"})
    try:
        driver = SSHDriver(strict.spec(), pool=pool)  # pool allows 8 per transport, the server 2
        # Several rounds: refusals that race each other once made the pool drop a live transport.
        for _ in range(6):
            with ThreadPoolExecutor(6) as ex:
                results = list(ex.map(lambda i: run(driver, ["sh", "-c", f"sleep 0.2; echo {i}"]), range(6)))
            assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(6)]
        assert len(pool.transports(driver.pool_key)) >= 3
    finally:
        strict.stop()


def test_a_run_on_a_warm_transport_is_fast(driver):
    # Nagle's algorithm (no TCP_NODELAY) adds ~44 ms to every channel; a warm channel + exec takes
    # a few ms. The best of several laps is robust against a busy machine.
    driver.ping()
    laps = sorted(driver.ping() for _ in range(9))
    assert laps[0] < 0.03, laps


def test_pin_of_a_non_preferred_key_type_is_honoured(sshd, pool, tmp_path):
    # paramiko asks for ed25519 first; pinning the server's ECDSA key must make it ask for that one.
    _, ecdsa_pub = keygen(tmp_path / "host_ecdsa", "ecdsa")
    multi = sshd.spawn(extra_config={"HostKey": [str(sshd.workdir / "host_ed25519"), str(tmp_path / "host_ecdsa")]})
    try:
        for pin in (ecdsa_pub, multi.host_key):
            assert SSHDriver(multi.spec(host_key=pin), pool=pool).ping() > 0
    finally:
        multi.stop()


def test_missing_command_is_exit_127(driver):
    res = run(driver, [f"agentruns-no-such-cli-{uuid.uuid4().hex}"])
    assert res.exit_code == 127 and res.killed is None


def test_idle_transports_are_closed(sshd):
    pool = TransportPool(idle_timeout=0.2)
    try:
        first = SSHDriver(sshd.spec(), pool=pool)
        first.ping()
        [old] = pool.transports(first.pool_key)
        time.sleep(0.4)
        SSHDriver(sshd.spec(id="another-device"), pool=pool).ping()  # any use sweeps the pool
        assert not old.is_active() and pool.transports(first.pool_key) == []
    finally:
        pool.close()


def test_endless_output_still_times_out(driver):
    res = run(driver, ["yes"], timeout=1, kill_grace=0.5, output_cap=4096)
    assert res.killed == "timeout" and res.exit_code is None
    assert res.stdout_truncated and len(res.stdout) == 4096 and res.stdout.startswith(b"y\ny\n")


def test_a_key_accepted_on_first_use_is_held_for_the_process(sshd, pool):
    first = sshd.spawn()
    spec = first.spec(host_key=None, trust_on_first_use=True)
    seen = []
    try:
        SSHDriver(spec, on_host_key=seen.append, pool=pool).ping()
    finally:
        first.stop()
    for transport in pool.transports():
        transport.close()
    replaced = sshd.spawn(new_host_key=True, port=first.port)  # same address, new key
    try:
        with pytest.raises(DriverError) as err:
            SSHDriver(spec, on_host_key=seen.append, pool=pool, retry_delays=()).ping()
        assert err.value.code == HOST_KEY_MISMATCH
        assert len(seen) == 1
    finally:
        replaced.stop()
