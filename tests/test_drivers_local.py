"""The local (subprocess) driver, against real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC

import pytest

from drivers import get_driver
from drivers.base import CWD_NOT_FOUND, DeviceSpec, DriverError, ExecRequest
from drivers.local import LocalDriver

# Everything a shell would mangle if the prompt were ever put on a command line.
TRICKY = ("it's \"quoted\" $(touch /tmp/pwned) `id` $HOME \\ \\n ; | & > < * ?\n"
          "second line\r\n\ttabbed\x00nul éü 日本語 🚀\n").encode()
BIG = bytes(range(256)) * 800  # 200 KiB covering every byte value


def unique_marker() -> str:
    """A sleep duration no other process uses, so pgrep can find exactly our processes."""
    return f"{900 + uuid.uuid4().int % 99}.{uuid.uuid4().int % 10**6:06d}"


def pgrep(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_pgrep(pattern: str, seconds: float = 5) -> list[int]:
    """The processes matching `pattern` once there is one: a shell forks its children after it starts."""
    deadline = time.monotonic() + seconds
    while not (found := pgrep(pattern)):
        assert time.monotonic() < deadline, f"no process matching {pattern!r}"
        time.sleep(0.02)
    return found


@pytest.fixture()
def driver() -> LocalDriver:
    local = get_driver(DeviceSpec(id="local", driver="local"))
    assert isinstance(local, LocalDriver)
    return local


def run(driver, argv, *, on_output=None, on_start=None, cancel=None, **kw):
    kw.setdefault("cwd", "/tmp")
    return driver.run(ExecRequest(argv=argv, **kw), on_output=on_output, on_start=on_start, cancel=cancel)


def test_get_driver_picks_local_and_rejects_unknown():
    assert isinstance(get_driver(DeviceSpec(id="x", driver="local")), LocalDriver)
    with pytest.raises(ValueError):
        get_driver(DeviceSpec(id="x", driver="telnet"))


def test_stdout_stderr_and_exit_code(driver):
    res = run(driver, ["sh", "-c", "printf out; printf err >&2; exit 7"])
    assert (res.stdout, res.stderr, res.exit_code, res.killed) == (b"out", b"err", 7, None)
    assert res.started_at.tzinfo == UTC and res.finished_at >= res.started_at


@pytest.mark.parametrize("payload", [TRICKY, BIG, b""], ids=["tricky", "200KiB", "empty"])
def test_stdin_round_trip_is_byte_exact_and_closed(driver, payload):
    # `cat` only exits on EOF, so this also proves stdin is closed after the payload.
    res = run(driver, ["cat"], stdin=payload, timeout=20)
    assert res.exit_code == 0 and res.killed is None
    assert res.stdout == payload


def test_large_stdin_not_read_does_not_hang(driver):
    res = run(driver, ["true"], stdin=b"x" * (4 * 1024 * 1024), timeout=10)
    assert res.exit_code == 0 and res.killed is None


def test_env_is_added_to_the_inherited_environment(driver):
    value = "a b'c\"$(d)`e`\nline2"
    res = run(driver, ["sh", "-c", 'printf "%s|%s" "$AGENTRUNS_T" "${PATH:+has-path}"'],
              env={"AGENTRUNS_T": value})
    assert res.stdout.decode() == f"{value}|has-path"


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A=B", "", "A B"])
def test_invalid_env_names_are_refused(driver, name):
    with pytest.raises(ValueError):
        run(driver, ["true"], env={name: "x"})


def test_cwd_is_used(driver, tmp_path):
    res = run(driver, ["pwd"], cwd=str(tmp_path))
    assert res.stdout.decode().strip() == str(tmp_path)


def test_missing_cwd_is_a_before_start_error(driver, tmp_path):
    with pytest.raises(DriverError) as err:
        run(driver, ["true"], cwd=str(tmp_path / "nope"))
    assert err.value.code == CWD_NOT_FOUND and err.value.before_start


def test_missing_executable_is_exit_127(driver):
    res = run(driver, [f"agentruns-no-such-cli-{uuid.uuid4().hex}"])
    assert res.exit_code == 127 and b"not found" in res.stderr


def test_output_cap_keeps_head_and_tail_and_flags_truncation(driver):
    chunks = []
    script = "head -c 6000 /dev/zero | tr '\\0' a; head -c 4000 /dev/zero | tr '\\0' z; printf small >&2"
    res = run(driver, ["sh", "-c", script], output_cap=1000, on_output=lambda s, c: chunks.append((s, c)))
    assert res.stdout == b"a" * 500 + b"z" * 500
    assert res.stdout_truncated and not res.stderr_truncated and res.stderr == b"small"
    # The callback saw every byte, not just the kept ones.
    assert b"".join(c for s, c in chunks if s == "stdout") == b"a" * 6000 + b"z" * 4000


def test_on_output_streams_before_exit_and_on_start_gets_the_pgid(driver):
    seen, starts = [], []
    res = run(driver, ["sh", "-c", "echo $$; sleep 0.5; echo done"],
              on_output=lambda s, c: seen.append((time.monotonic(), c)), on_start=starts.append)
    end = time.monotonic()
    assert starts == [res.pgid]
    assert res.stdout.split()[0] == str(res.pgid).encode()  # the leader's pid is the group id
    assert seen[0][1].startswith(str(res.pgid).encode()) and end - seen[0][0] > 0.3


def test_timeout_kills_the_whole_tree(driver):
    marker = unique_marker()
    # A child that ignores TERM, and a grandchild behind a subshell.
    script = f"sh -c 'trap \"\" TERM; sleep {marker}' & (sleep {marker}; true) & sleep {marker}"
    start = time.monotonic()
    res = run(driver, ["sh", "-c", script], timeout=0.5, kill_grace=0.5)
    elapsed = time.monotonic() - start
    assert res.killed == "timeout" and res.exit_code is None
    assert 0.5 <= elapsed < 3
    assert pgrep(f"sleep {marker}") == []


def test_cancel_event_kills_promptly(driver):
    marker = unique_marker()
    cancel = threading.Event()
    started = threading.Event()
    result = {}

    def go():
        result["res"] = run(driver, ["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout=60,
                            cancel=cancel, on_start=lambda pgid: started.set())

    t = threading.Thread(target=go, daemon=True)
    t.start()
    try:
        assert started.wait(5)
        wait_pgrep(f"sleep {marker}")
    finally:
        cancel.set()
    t.join(3)
    assert not t.is_alive()
    assert result["res"].killed == "canceled" and result["res"].exit_code is None
    assert pgrep(f"sleep {marker}") == []


def test_kill_group(driver):
    marker = unique_marker()
    proc = subprocess.Popen(["sleep", marker], start_new_session=True)
    try:
        assert driver.kill_group(proc.pid, grace=0.5) is True
        assert proc.wait(2) == -15
        assert driver.kill_group(proc.pid) is False  # reaped: the group is gone
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(ValueError):
        driver.kill_group(1)


def test_ping_is_a_small_positive_number(driver):
    assert 0 < driver.ping() < 2


def test_env_does_not_leak_into_this_process(driver):
    run(driver, ["true"], env={"AGENTRUNS_LEAK_CHECK": "1"})
    assert "AGENTRUNS_LEAK_CHECK" not in os.environ


@pytest.mark.parametrize("cap", [0, 1, 7, 1000])
def test_capped_buffer_keeps_exactly_head_and_tail(cap):
    from drivers._common import CappedBuffer

    data = os.urandom(5000)
    for size in (0, cap, cap + 1, 3000, 5000):
        buf = CappedBuffer(cap)
        for i in range(0, size, 13):  # odd chunk sizes cross the head/tail boundary
            buf.feed(data[i:min(i + 13, size)])
        head, tail = cap // 2, cap - cap // 2
        expected = data[:size] if size <= cap else data[:head] + data[size - tail:size]
        assert (buf.getvalue(), buf.truncated) == (expected, size > cap), (cap, size)


def test_driver_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(DriverError("connection_lost", "gone", before_start=False, pgid=42)))
    fields = (err.code, err.message, err.before_start, err.pgid, str(err))
    assert fields == ("connection_lost", "gone", False, 42, "gone")


def test_endless_output_still_times_out(driver):
    res = run(driver, ["yes"], timeout=0.5, kill_grace=0.5, output_cap=4096)
    assert res.killed == "timeout" and res.exit_code is None
    assert res.stdout_truncated and len(res.stdout) == 4096 and res.stdout.startswith(b"y\ny\n")


def test_a_stop_waits_out_the_grace_only_for_what_outlives_the_term(driver):
    marker = unique_marker()
    start = time.monotonic()
    res = run(driver, ["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout=0.3, kill_grace=5)
    assert res.killed == "timeout" and res.exit_code is None
    assert time.monotonic() - start < 2  # everything died on TERM: the 5 s grace is not waited out
    assert pgrep(f"sleep {marker}") == []


def test_pipes_held_by_a_process_that_left_the_group_are_given_up_on(driver):
    marker = unique_marker()
    start = time.monotonic()
    try:
        # setsid takes the sleep out of the run's group; it keeps the stdout pipe open.
        res = run(driver, ["sh", "-c", f"setsid sleep {marker} & sleep {marker}"], timeout=0.3, kill_grace=0.3)
        elapsed = time.monotonic() - start
        assert res.killed == "timeout" and res.exit_code is None
        # timeout + grace + the 3 s allowed for pipes held by an escaped process
        assert 3.5 <= elapsed < 6
        assert len(pgrep(f"sleep {marker}")) == 1  # the escaped one: the group kill cannot reach it
    finally:
        for pid in pgrep(f"sleep {marker}"):
            os.kill(pid, signal.SIGKILL)
