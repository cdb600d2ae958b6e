"""The pure parts of detached execution: the device scripts' text, the channel protocol, the offsets."""
from __future__ import annotations

import random
import threading
import time
import types
import uuid

import pytest

from drivers import ssh_protocol, ssh_script, ssh_spool
from drivers._common import OutputSink
from drivers.ssh_janitor import Janitor
from drivers.ssh_protocol import ChannelStream
from workers.supervisor import ActiveRun, Supervisor

pytestmark = pytest.mark.unit

TAG = b"__agentruns_0123456789abcdef"


def feed_in_pieces(stream: ChannelStream, data: bytes, rng: random.Random) -> bytes:
    out, i = b"", 0
    while i < len(data):
        n = rng.randint(1, 9)
        out += stream.feed(data[i:i + n])
        i += n
    return out


def test_rc_noise_before_the_protocol_line_is_dropped_and_kept_for_errors():
    stream = ChannelStream(TAG, verdict=False)
    assert stream.feed(b"Welcome!\n" + TAG[:7]) == b""
    assert stream.feed(TAG[7:] + b" start 4242\nout") == b"out"
    assert stream.line == [b"start", b"4242"] and stream.noise == b"Welcome!\n" and stream.offset == 3


@pytest.mark.parametrize("seed", range(60))
def test_an_attach_verdict_is_cut_from_the_output_however_the_stream_is_split(seed):
    rng = random.Random(seed)
    data = bytes(rng.choice(b"ab\n_" + TAG[:3]) for _ in range(rng.randint(0, 80)))
    if rng.random() < 0.3:  # a line that looks like a verdict, with output after it, is output
        data += b"\n" + TAG + b" end 0\n" + b"more output"
    verdict = rng.choice([b"\n" + TAG + b" end 3\n", b"\n" + TAG + b" more\n", b""])
    stream = ChannelStream(TAG, verdict=True)
    out = feed_in_pieces(stream, b"noise\n" + TAG + b" attached 42\n" + data + verdict, rng)
    rest, words = stream.finish()
    assert out + rest == data and stream.offset == len(data)
    assert words == (verdict.split()[1:] if verdict else None)


def test_a_trailing_line_that_is_no_verdict_is_output():
    stream = ChannelStream(TAG, verdict=True)
    out = stream.feed(TAG + b" attached 1\nx\n" + TAG + b" bogus\n")
    rest, words = stream.finish()
    assert (out + rest, words) == (b"x\n" + TAG + b" bogus\n", None)


def test_exit_codes_from_the_waiters_status():
    assert [ssh_protocol.exit_code(s) for s in (0, 7, 128, 137, 143, 192, 193, 255, -1, None)] == \
        [0, 7, 128, None, None, None, 193, 255, None, None]
    assert [ssh_protocol.parse_status(w) for w in (b"3", b"-", None, b"x")] == [3, None, None, None]


def test_a_sink_forwards_only_what_was_not_streamed_before():
    seen: list[tuple[str, bytes]] = []
    sink = OutputSink(1024, lambda s, c: seen.append((s, c)), {"stdout": 5, "stderr": 0})
    for chunk in (b"abc", b"defg", b"hi"):
        sink.feed("stdout", chunk)
    sink.feed("stderr", b"e")
    assert sink.stdout.getvalue() == b"abcdefghi" and sink.position("stdout") == 9
    assert seen == [("stdout", b"fg"), ("stdout", b"hi"), ("stderr", b"e")]


def test_offsets_count_every_byte_taken_even_past_the_event_cap():
    ctx = types.SimpleNamespace(settings=types.SimpleNamespace(max_events_per_run=2))
    sup = Supervisor(ctx)
    run = ActiveRun(uuid.uuid4(), 1, "lock", "t", "", "")
    for chunk in (b"ab", b"cde", b"fghi"):
        sup.output(run, "stdout", chunk)
    sup.output(run, "stderr", b"x")
    assert (run.stdout_offset, run.stderr_offset) == (9, 1)
    assert [t for t, _ in run.events] == ["stdout", "stdout", "note"]  # capped: the rest is dropped


def test_lease_lost_lets_a_detachable_run_go_and_stops_any_other():
    ssh, local = (ActiveRun(uuid.uuid4(), 1, "l", "t", "", "", detachable=d) for d in (True, False))
    for run in (ssh, local):
        run.request_stop("lease_lost")
    assert ssh.detach.is_set() and not ssh.stop.is_set()
    assert local.stop.is_set() and not local.detach.is_set()
    canceled = ActiveRun(uuid.uuid4(), 1, "l", "t", "", "", detachable=True)
    canceled.request_stop("canceled")
    assert canceled.stop.is_set() and not canceled.detach.is_set()


def test_the_start_wrapper_spools_and_detaches():
    command = ssh_script.build_command(["claude", "-p"], "/w", "n0nce", login_shell=True, backstop=100,
                                       kill_grace=2, spool_key="run-1", stdin_len=1234, spool_cap=2 * 1024 * 1024)
    script = command.split(" ", 3)[3]
    for piece in ("setsid", "/.agentruns/spool/run-1.", "'1234 byte'", "ulimit -f 4096",
                  "set -C", "timeout -s TERM -k 2 100", '"$__agentruns_rc" >> "$__agentruns_p"pgid'):
        assert piece in script, piece
    with pytest.raises(ValueError):
        ssh_script.build_command(["true"], "/", "n0nce", login_shell=False, backstop=None, kill_grace=1,
                                 spool_key="../escape")


def test_the_spool_scripts_take_only_safe_keys_and_offsets():
    assert "tail -c +101 -f" in ssh_spool.attach_command("run-1", "__agentruns_x", 100, 0)
    for bad in ("", "../x", "a b", "-rf", "x" * 200):
        with pytest.raises(ValueError):
            ssh_spool.check_key(bad)
    with pytest.raises(ValueError):
        ssh_spool.attach_command("run-1", "__agentruns_x", -1, 0)
    cleanup = ssh_spool.cleanup_command(["a", "b"], stop=["b"], sweep=True)
    # Each file by its name: a glob would read the whole spool directory once per run.
    assert "rm -rf -- a a.in a.o a.e a.stdout a.stderr a.pgid a.prompt b b.in" in cleanup
    assert "*" not in cleanup.split("rm -rf --")[1].split("\n")[0]
    assert '"-$P"' in cleanup and "-mtime +1" in cleanup
    assert ssh_spool.spool_cap(1024 * 1024) == 64 * 1024 * 1024 and ssh_spool.spool_cap(10) == 1024 * 1024


def test_the_janitor_removes_spools_in_batches_and_keeps_them_when_the_device_is_away():
    janitor, calls, release, fail = Janitor(delay=0.0, retry_delays=(0.0,)), [], threading.Event(), []

    def run(command: str):
        calls.append(command)
        release.wait(5)
        if fail:
            from drivers.base import DriverError
            raise DriverError("device_unreachable", "away", before_start=True)

    first = janitor.discard("dev", "k1", run)
    assert first is not None
    deadline = time.monotonic() + 5
    while not calls:  # the first removal runs (and hangs until released)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert janitor.discard("dev", "k2", run) is None and janitor.discard("dev", "k3", run) is None
    release.set()
    first.join(5)
    assert len(calls) == 2 and "k1" in calls[0] and "k2 k2.in" in calls[1] and " k3 k3.in" in calls[1]
    assert janitor.pending("dev") == set()
    fail.append(True)
    thread = janitor.discard("dev", "k4", run)
    assert thread is not None
    thread.join(5)
    assert len(calls) == 4  # tried again once, then kept for the next run on that device
    assert janitor.pending("dev") == {"k4"}


def test_the_kill_batcher_sends_the_stops_asked_for_meanwhile_together_and_hands_failures_to_each():
    from drivers.base import DriverError
    from drivers.ssh_kill import KillBatcher

    batcher, batches, release = KillBatcher(), [], threading.Event()

    def run(pgids, grace):
        batches.append((pgids, grace))
        release.wait(5)
        if 13 in pgids:
            raise DriverError("connection_lost", "gone", before_start=False)
        return {p for p in pgids if p != 12}

    results: dict[int, object] = {}

    def stop(pgid):
        try:
            results[pgid] = batcher.kill("dev", pgid, 0.5, run)
        except DriverError as exc:
            results[pgid] = exc.code

    first = threading.Thread(target=stop, args=(10,))
    first.start()
    deadline = time.monotonic() + 5
    while not batches:  # the first stop's exec runs (and hangs until released)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    others = [threading.Thread(target=stop, args=(p,)) for p in (11, 12)]
    for t in others:
        t.start()
    time.sleep(0.1)  # both are waiting for the first exec
    release.set()
    for t in (first, *others):
        t.join(5)
    assert batches == [([10], 0.5), ([11, 12], 0.5)] and results == {10: True, 11: True, 12: False}
    batches.clear()
    failing = [threading.Thread(target=stop, args=(p,)) for p in (13,)]
    for t in failing:
        t.start()
        t.join(5)
    assert results[13] == "connection_lost"


def test_a_stop_returns_once_its_own_batch_is_done_not_the_later_ones():
    """The first stop of a device used to send the later batches too before returning: its run waited
    for other runs' kills."""
    from drivers.ssh_kill import KillBatcher

    batcher, batches = KillBatcher(), []
    first_sent, second_release = threading.Event(), threading.Event()

    def run(pgids, grace):
        batches.append(pgids)
        if pgids == [10]:
            first_sent.set()
            time.sleep(0.2)  # the second stop comes in meanwhile
        else:
            second_release.wait(5)
        return set(pgids)

    done: dict[int, float] = {}
    threads = [threading.Thread(target=lambda p=p: done.setdefault(p, batcher.kill("dev", p, 0.5, run) and
                                                                   time.monotonic())) for p in (10, 11)]
    threads[0].start()
    assert first_sent.wait(5)
    threads[1].start()
    threads[0].join(3)
    assert not threads[0].is_alive() and 10 in done, "the first stop waited for the next batch"
    assert 11 not in done
    second_release.set()
    threads[1].join(5)
    assert batches == [[10], [11]] and set(done) == {10, 11}


def test_a_channel_whose_connection_just_died_closes_without_raising():
    """paramiko's Channel.close sends a message: on a connection that just died it raises EOFError,
    which once escaped the run (its task crashed and the run waited for the reaper)."""
    from drivers.base import ExecRequest
    from drivers.ssh_run import SSHRun, _Channel

    released = []

    class DeadChannel:
        def fileno(self):
            return -1

        def close(self):
            raise EOFError()

    driver = type("Driver", (), {"pool": type("Pool", (), {"release": lambda self, conn: released.append(conn)})()})()
    run = SSHRun(driver, ExecRequest(argv=["true"], cwd="/"), "", b"", "n0nce", None, None)
    run.channel = _Channel("conn", DeadChannel(), b"__agentruns_n0nce", attach=False)
    run.close()
    assert released == ["conn"] and run.channel is None


def test_no_process_group_below_2_is_ever_signalled():
    """`kill -- -1` would signal every process of the device user: refused before anything is sent."""
    from drivers import ssh_script
    from drivers.base import DeviceSpec
    from drivers.ssh import SSHDriver

    driver = SSHDriver(DeviceSpec(id="d", driver="ssh", host="192.0.2.1", username="u"))  # never connected
    for bad in (1, 0, -5, True, "7"):
        with pytest.raises(ValueError):
            driver.kill_group(bad)
        with pytest.raises(ValueError):
            ssh_script.kill_command([42, bad], 1.0)
