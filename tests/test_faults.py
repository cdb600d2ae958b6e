"""The fault suite (issue #11): an operator's bad day against the real stack, while runs keep coming.

Workers are SIGKILLed and respawned, Redis dies and comes back empty, PostgreSQL stops at once (with
durable commits) and starts again, one device is cut (its sshd and connections die, the commands
keep running) for 8 s, and a worker is shut down warm with runs in flight. Executions are counted on
the device itself. Every accepted run must end, none may run twice, nothing may be left running,
the API never answers 500, no service exits on its own, and since every fault lasts seconds, at
least 95 % of the runs succeed.
"""
from __future__ import annotations

import collections
import signal
import time
import uuid

import psycopg
import pytest

from tests.faults import FaultStack, Load, lines

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

RUNS = 120
EVERY = 0.3  # seconds between creates: about 36 s of load
OVERRIDES = dict(lease_seconds=6, heartbeat_seconds=1, reaper_interval_seconds=1, queued_stale_seconds=5,
                 kill_grace_seconds=1, shutdown_grace_seconds=4)


@pytest.fixture()
def stack(tmp_path):
    stack = FaultStack(tmp_path, OVERRIDES)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture()
def devices(sshd):
    """Two devices on sshd servers of their own (one of them gets cut), with a working folder each."""
    servers = {name: sshd.spawn() for name in ("dev-a", "dev-b")}
    workdirs = {name: f"/tmp/agentruns-faults-{name}-{uuid.uuid4().hex[:6]}" for name in servers}
    sshd.run_as_user("mkdir -p " + " ".join(workdirs.values()))
    yield servers, workdirs
    for server in servers.values():
        server.stop()
    sshd.run_as_user("rm -rf " + " ".join(workdirs.values()))


def _faults(stack: FaultStack, servers, log: list[str]) -> None:
    """The bad day, on a schedule from the start of the load."""
    start = time.monotonic()

    def at(second: float, what: str) -> None:
        time.sleep(max(0.0, second - (time.monotonic() - start)))
        log.append(f"{time.monotonic() - start:5.1f}s {what}")

    at(4, "SIGKILL worker w1")
    stack.kill_worker("w1")
    at(5, "w1 respawned")
    stack.start_worker("w1b")
    at(9, "Redis killed")
    stack.restart_redis(down_seconds=2)
    log.append(f"{time.monotonic() - start:5.1f}s Redis back, empty")
    at(15, "PostgreSQL stopped (immediate)")
    stack.restart_postgres(down_seconds=3)
    log.append(f"{time.monotonic() - start:5.1f}s PostgreSQL back")
    at(22, "dev-a cut")
    servers["dev-a"].cut()
    at(30, "dev-a back")
    servers["dev-a"].resume()
    at(32, "SIGKILL worker w2")
    stack.kill_worker("w2")
    stack.start_worker("w2b")
    at(35, "warm shutdown of w1b")
    stack.kill_worker("w1b", signal.SIGTERM)
    stack.start_worker("w1c")


def test_runs_ride_through_faults(stack, devices, sshd):
    servers, workdirs = devices
    for name, server in servers.items():
        stack.add_device(name, server, workdirs[name], slots=6)
    load = Load(stack, list(servers))
    fault_log: list[str] = []
    posting = load.run(RUNS, EVERY)
    # The faults from this thread: an sshd dies with the thread that started it (PR_SET_PDEATHSIG).
    _faults(stack, servers, fault_log)
    posting.join(120)
    assert not posting.is_alive(), fault_log

    assert stack.pg is not None
    with psycopg.connect(stack.pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
        deadline = time.monotonic() + 120
        while True:
            rows = dict(conn.execute("SELECT metadata->>'token', status FROM runs").fetchall())
            live = [t for t, status in rows.items() if status in ("queued", "running")]
            if not live or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        errors = collections.Counter(conn.execute(
            "SELECT coalesce(error->>'code', status) FROM runs").fetchall())

    starts = [t for name in servers for t in lines(sshd, f"{workdirs[name]}/starts")]
    twice = [t for t, n in collections.Counter(starts).items() if n > 1]
    leftover = sshd.pgrep("fault-")
    succeeded = sum(1 for status in rows.values() if status == "succeeded")
    report = (f"faults: {fault_log}\noutcomes: {dict(errors)}\naccepted {len(load.accepted)} of {RUNS}, "
              f"refused {load.refused}, answers {collections.Counter(load.statuses)}")
    print(report)
    assert set(load.accepted) <= set(rows), report  # every accepted run is in the database ...
    assert not live, f"runs never ended: {live}\n{report}"  # ... and ended
    # Without the device's record of starts, "none ran twice" below would prove nothing.
    assert len(starts) >= succeeded, f"the device recorded fewer starts than successes\n{report}"
    assert not twice, f"executed twice on the device: {twice}\n{report}"
    assert leftover == [], f"left running on the device: {leftover}\n{report}"
    assert 500 not in load.statuses, report
    assert all(stack.alive_services().values()), f"{stack.alive_services()}\n{report}"
    assert succeeded >= 0.95 * RUNS, report
