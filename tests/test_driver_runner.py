"""The run loop both drivers share (drivers/_runner.py), against a command simulated in memory."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from drivers._runner import Pacing, Runner, escalate
from drivers.base import CONNECTION_LOST, DriverError, ExecRequest, ExecResult

pytestmark = pytest.mark.unit

TICK, IDLE_TICK, QUIET_AFTER, SLACK = 0.01, 0.05, 0.2, 0.3


class FakeRun(Runner):
    """A process group that exists only in memory; it records what the loop asks of it."""

    pacing = Pacing(tick=TICK, idle_tick=IDLE_TICK, quiet_after=QUIET_AFTER, escape_slack=SLACK)

    def __init__(self, *, timeout=10.0, kill_grace=0.3, on_output=None, on_start=None, pgid_after=0.0,
                 ends_after=None, exit_status=0, dies_on_term=True, escaped=False, output=(), early=None,
                 slow_stop=0.0, lost=False, output_cap=1024) -> None:
        req = ExecRequest(argv=["fake"], cwd="/", timeout=timeout, kill_grace=kill_grace, output_cap=output_cap)
        super().__init__(req, on_output, on_start)
        self.pgid_after, self.ends_after, self.exit_status = pgid_after, ends_after, exit_status
        self.dies_on_term, self.escaped, self.early = dies_on_term, escaped, early
        self.slow_stop, self.lost = slow_stop, lost
        self.output = list(output)  # (seconds after start, stream, chunk)
        self.t0 = 0.0
        self.alive = True
        self.by_signal = False
        self.signals: list[tuple[float, int]] = []
        self.stops: list[tuple[int, float]] = []
        self.waits: list[tuple[float, float]] = []  # (when, timeout)
        self.calls: list[str] = []
        self.returned_at: float | None = None

    def run(self, cancel=None):
        try:
            return super().run(cancel)
        finally:
            self.returned_at = time.monotonic()

    def start(self, cancel):
        self.calls.append("start")
        self.t0 = time.monotonic()
        return self.early

    def attach(self):
        self.calls.append("attach")

    def read(self):
        elapsed, got = time.monotonic() - self.t0, False
        if self.pgid is None and self.pgid_after is not None and elapsed >= self.pgid_after:
            self.started(4242)
        while self.output and self.output[0][0] <= elapsed:
            _, stream, chunk = self.output.pop(0)
            self.sink.feed(stream, chunk)
            got = True
        if self.ends_after is not None and elapsed >= self.ends_after and not self.output:
            self.alive = False
        return got

    def wait(self, timeout):
        self.waits.append((time.monotonic(), timeout))
        time.sleep(timeout)

    def ended(self):
        return not self.alive and not self.escaped

    def stop_group(self, pgid, grace):
        self.stops.append((pgid, grace))
        escalate(self._signal, self._wait_gone, grace)

    def _signal(self, sig):
        self.signals.append((time.monotonic(), sig))
        if sig == signal.SIGKILL or self.dies_on_term:
            self.alive, self.by_signal = False, True
        return True

    def _wait_gone(self, until):
        while self.alive and time.monotonic() < until:
            time.sleep(0.005)
        time.sleep(self.slow_stop)  # like a kill that runs on a device: it reports back late

    def exit_code(self, killed):
        self.calls.append(f"exit_code({killed})")
        if self.lost:
            raise DriverError(CONNECTION_LOST, "gone", before_start=False, pgid=self.pgid)
        return None if self.by_signal else self.exit_status

    def close(self):
        self.calls.append("close")


def sigs(run: FakeRun) -> list[int]:
    return [sig for _, sig in run.signals]


def test_a_command_that_ends_gives_one_result_with_its_output():
    seen, starts = [], []
    run = FakeRun(ends_after=0.05, exit_status=3, on_output=lambda s, c: seen.append((s, c)), on_start=starts.append,
                  output=[(0.0, "stdout", b"a"), (0.02, "stderr", b"e"), (0.04, "stdout", b"b")])
    res = run.run()
    assert (res.exit_code, res.stdout, res.stderr, res.killed, res.pgid) == (3, b"ab", b"e", None, 4242)
    assert seen == [("stdout", b"a"), ("stderr", b"e"), ("stdout", b"b")] and starts == [4242]
    assert res.started_at is not None and res.finished_at is not None and res.started_at <= res.finished_at
    assert run.stops == [] and run.calls == ["start", "attach", "exit_code(None)", "close"]


def test_output_is_capped_by_the_sink():
    res = FakeRun(ends_after=0.0, output_cap=10, output=[(0.0, "stdout", b"x" * 100)]).run()
    assert res.stdout == b"x" * 10 and res.stdout_truncated and not res.stderr_truncated


def test_timeout_sends_term_then_kill_and_returns_once_the_group_is_gone():
    start = time.monotonic()
    run = FakeRun(timeout=0.1, kill_grace=2.0)
    res = run.run()
    assert res.killed == "timeout" and res.exit_code is None and res.pgid == 4242
    assert sigs(run) == [signal.SIGTERM, signal.SIGKILL] and run.stops == [(4242, 2.0)]
    term_at = run.signals[0][0]
    assert 0.1 <= term_at - start < 0.5
    assert run.signals[1][0] - term_at < 1.0  # the group died on TERM: no need to wait out the grace


def test_a_group_that_ignores_term_is_killed_after_the_grace():
    run = FakeRun(timeout=0.05, kill_grace=0.4, dies_on_term=False)
    res = run.run()
    assert res.killed == "timeout" and sigs(run) == [signal.SIGTERM, signal.SIGKILL]
    (term_at, _), (kill_at, _) = run.signals
    assert 0.4 <= kill_at - term_at < 0.4 + 0.5


def test_the_run_returns_only_after_the_kill_went_out():
    # The output ends right after the TERM; the kill still takes a while to report (remote kill).
    run = FakeRun(timeout=0.05, kill_grace=1.0, slow_stop=0.3)
    run.run()
    assert sigs(run) == [signal.SIGTERM, signal.SIGKILL]
    assert run.returned_at is not None and run.returned_at >= run.signals[1][0]


def test_cancel_is_reported_as_canceled_and_stops_the_group():
    cancel = threading.Event()
    run = FakeRun(timeout=30)
    threading.Timer(0.1, cancel.set).start()
    start = time.monotonic()
    res = run.run(cancel)
    assert res.killed == "canceled" and res.exit_code is None
    assert run.stops == [(4242, 0.3)] and sigs(run) == [signal.SIGTERM, signal.SIGKILL]
    assert time.monotonic() - start < 1.0


def test_cancel_wins_when_the_deadline_has_passed_too():
    cancel = threading.Event()
    cancel.set()
    res = FakeRun(timeout=0.0).run(cancel)
    assert res.killed == "canceled"


def test_output_held_open_by_an_escaped_process_is_given_up_after_grace_and_slack():
    start = time.monotonic()
    run = FakeRun(timeout=0.1, kill_grace=0.2, escaped=True)
    res = run.run()
    elapsed = time.monotonic() - start
    assert res.killed == "timeout" and sigs(run) == [signal.SIGTERM, signal.SIGKILL]
    assert 0.1 + 0.2 + SLACK <= elapsed < 0.1 + 0.2 + SLACK + 0.6
    assert run.calls[-2:] == ["exit_code(timeout)", "close"]


def test_a_command_that_never_reports_its_pgid_is_abandoned_after_the_grace() -> None:
    start = time.monotonic()
    starts: list[int] = []
    run = FakeRun(timeout=0.1, kill_grace=0.2, pgid_after=None, on_start=starts.append)
    res = run.run()
    elapsed = time.monotonic() - start
    assert res.killed == "timeout" and res.pgid is None and res.started_at is None and starts == []
    assert run.stops == [] and run.signals == []  # nothing to signal
    assert 0.3 <= elapsed < 0.3 + 0.5


def test_a_pgid_reported_after_the_deadline_is_still_stopped():
    run = FakeRun(timeout=0.05, kill_grace=0.5, pgid_after=0.2)
    res = run.run()
    assert res.killed == "timeout" and res.pgid == 4242 and run.stops == [(4242, 0.5)]
    assert sigs(run) == [signal.SIGTERM, signal.SIGKILL]


def test_a_quiet_run_wakes_less_often_and_so_does_one_whose_stop_is_on_its_way():
    # The group ignores TERM, so the loop keeps waiting through the grace. A run whose stop was sent
    # only waits for its output to end (a real wait() returns when it does): it ticks slowly, or a
    # thousand runs canceled at once would keep a worker's every core busy polling.
    run = FakeRun(timeout=0.7, kill_grace=0.3, dies_on_term=False, output=[(0.0, "stdout", b"hello")])
    run.run()
    stop_at = run.signals[0][0]
    busy = [t for when, t in run.waits if when - run.t0 < QUIET_AFTER - 0.02]
    quiet = [t for when, t in run.waits if QUIET_AFTER + 0.05 < when - run.t0 and when < stop_at - 0.1]
    stopping = [t for when, t in run.waits if when > stop_at + 0.01]
    assert busy and set(busy) == {TICK}
    assert quiet and set(quiet) == {IDLE_TICK}
    assert stopping and set(stopping) == {IDLE_TICK}


def test_new_output_makes_a_quiet_run_tick_fast_again():
    run = FakeRun(ends_after=0.9, output=[(0.0, "stdout", b"a"), (0.5, "stdout", b"b")])
    run.run()
    after_b = [t for when, t in run.waits if 0.55 < when - run.t0 < 0.5 + QUIET_AFTER - 0.05]
    assert after_b and set(after_b) == {TICK}


def test_a_result_from_start_is_returned_as_is():
    early = ExecResult(exit_code=127, stdout=b"", stderr=b"no such command\n")
    run = FakeRun(early=early)
    assert run.run() is early
    assert run.calls == ["start"]  # never attached, nothing to close


def test_close_runs_when_the_exit_code_is_an_error():
    run = FakeRun(ends_after=0.0, lost=True)
    with pytest.raises(DriverError) as err:
        run.run()
    assert err.value.code == CONNECTION_LOST and err.value.pgid == 4242
    assert run.calls[-1] == "close"


def test_a_failing_on_start_callback_does_not_stop_the_run():
    def boom(pgid):
        raise RuntimeError("consumer bug")

    res = FakeRun(ends_after=0.02, exit_status=0, on_start=boom).run()
    assert (res.exit_code, res.killed, res.pgid) == (0, None, 4242)


def test_escalate_terms_waits_then_kills() -> None:
    events: list[tuple[str, float]] = []

    def send(sig):
        events.append(("TERM" if sig == signal.SIGTERM else "KILL", time.monotonic()))
        return True

    start = time.monotonic()
    assert escalate(send, lambda until: events.append(("wait", until)), 0.5) is True
    assert [name for name, _ in events] == ["TERM", "wait", "KILL"]
    assert abs(events[1][1] - (start + 0.5)) < 0.1  # waits until the grace is up, counted from the TERM


def test_escalate_sends_nothing_more_when_the_group_is_gone() -> None:
    sent: list[int] = []

    def send(sig):
        sent.append(sig)
        return False

    waited: list[float] = []
    assert escalate(send, waited.append, 0.5) is False
    assert sent == [signal.SIGTERM] and waited == []
