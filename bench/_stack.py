"""Shared pieces of the benchmarks: a cleanup stack with a deadline, the embedded services, an API
client, statistics and tables.

Every process a benchmark starts is registered on `Bench.stack` right after it starts, so an error,
Ctrl-C or SIGTERM stops them all (in reverse order) before the script exits.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent


class DeadlineExceeded(RuntimeError):
    """A benchmark phase ran out of its time budget."""


class Bench:
    """Context: an ExitStack of cleanups, a temp dir, and a wall-clock budget for the whole script."""

    def __init__(self, budget_seconds: float, name: str):
        self.name = name
        self.deadline = time.monotonic() + budget_seconds
        self.stack = ExitStack()
        self.tmp: Path | None = None
        self.pids: dict[str, int] = {}  # name -> root pid of a process tree we started (CPU accounting)
        self.procs: dict[str, object] = {}  # name -> tests.stack.Proc, for their logs
        self._old_handlers: dict[int, Any] = {}  # what signal.signal returned: a handler, or SIG_DFL/SIG_IGN

    def __enter__(self) -> Bench:
        # SIGTERM/SIGHUP become KeyboardInterrupt so the same `finally` cleanups run as for Ctrl-C; SIGINT
        # too, even when inherited as ignored (a background job of a non-interactive shell).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _interrupt)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"agentruns-bench-{self.name}-"))
        self.tmp.chmod(0o755)
        self.stack.callback(shutil.rmtree, self.tmp, ignore_errors=True)
        return self

    def __exit__(self, *exc) -> None:
        try:
            # A second Ctrl-C during cleanup must not abandon the remaining processes.
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self.stack.close()
            finally:
                signal.signal(signal.SIGINT, old_int)
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise DeadlineExceeded(f"time budget exhausted during {what}")

    def on_exit(self, fn, *args, **kwargs) -> None:
        """Register a cleanup (run last-in first-out; its exceptions are printed, not raised)."""
        self.stack.callback(_quietly, fn, *args, **kwargs)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _quietly(fn, *args, **kwargs) -> None:
    name, t = getattr(fn, "__qualname__", fn), time.monotonic()
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failed cleanup must not skip the others
        print(f"cleanup {name} failed: {exc}", file=sys.stderr)
    if time.monotonic() - t > 3:
        what = getattr(args[0], "name", "") if args else ""
        print(f"cleanup {name} {what} took {time.monotonic() - t:.1f} s", file=sys.stderr)


def stop_proc(proc) -> None:
    """Stop a tests.stack.Proc (its whole process group), SIGKILL after 20 s."""
    proc.stop(timeout=20)


def start_services(bench: Bench) -> Settings:
    """Embedded PostgreSQL (fast mode) and Redis under the bench temp dir, migrated; returns Settings.

    Their pids go to bench.pids["postgres"] / ["redis"] for the CPU accounting.
    """
    from agentruns.embedded import start_postgres, start_redis
    from core.crypto import new_secret_key
    from core.device_networks import LOOPBACK
    from core.migrate import upgrade

    if bench.tmp is None:
        raise RuntimeError("bug: start_services outside `with Bench(...)`")
    pg = start_postgres(bench.tmp / "pg", fast=True)
    bench.on_exit(pg.stop)
    redis_server = start_redis(bench.tmp / "redis")
    bench.on_exit(redis_server.stop)
    upgrade(pg.url)
    bench.pids.update(postgres=pg.pid, redis=redis_server.pid)
    # api_throughput and sse_viewers use a local device, run_latency an sshd on 127.0.0.1
    return Settings(database_url=pg.url, redis_url=redis_server.url, secret_key=new_secret_key(),
                    allow_local_devices=True, device_networks=LOOPBACK)


def make_api_key(settings: Settings, tenant: str = "bench") -> str:
    from core import db
    from core.services.keys import create_key

    db.init(settings.database_url)
    with db.session() as s:
        _, raw, _ = create_key(s, tenant)
    return raw


def start_api(bench: Bench, env: dict[str, str], workers: int = 2) -> str:
    """`agentruns api` (gunicorn, gevent workers) on a free port; returns its base URL."""
    from tests.sshd import free_port
    from tests.stack import start_api as _start

    port = free_port()
    proc = _start(env, port, workers=workers)
    bench.on_exit(_stop_api, proc)
    bench.pids["api"] = proc.pid
    bench.procs["api"] = proc
    return f"http://127.0.0.1:{port}"


def _stop_api(proc) -> None:
    # SIGTERM is gunicorn's graceful stop, which waits up to graceful_timeout (30 s) for requests in
    # flight, such as a long-poll whose client we just interrupted; SIGINT is its quick shutdown.
    proc.kill(signal.SIGINT)
    try:
        proc.proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    proc.stop(timeout=10)


def pg_dsn(settings: Settings) -> str:
    """A libpq URL for psycopg from the SQLAlchemy URL."""
    return settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


class Api:
    """A small synchronous client for the REST API (one keep-alive connection pool)."""

    def __init__(self, base_url: str, key: str, timeout: float = 90.0, connections: int = 20):
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.http = httpx.Client(base_url=base_url, headers=self.headers, timeout=timeout,
                                 limits=httpx.Limits(max_connections=connections,
                                                     max_keepalive_connections=connections))

    def close(self) -> None:
        self.http.close()

    def _ok(self, resp: httpx.Response, *codes: int) -> dict:
        if resp.status_code not in codes:
            raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def create_device(self, body: dict) -> dict:
        return self._ok(self.http.post("/api/v1/devices", json=body), 201)["data"]

    def create_run(self, body: dict, **headers) -> dict:
        return self._ok(self.http.post("/api/v1/agent-runs", json=body, headers=headers), 200, 201)["data"]

    def get_run(self, run_id: str, wait: int = 0) -> dict:
        return self._ok(self.http.get(f"/api/v1/agent-runs/{run_id}", params={"wait": wait} if wait else None),
                        200)["data"]

    def cancel(self, run_id: str) -> dict:
        return self._ok(self.http.post(f"/api/v1/agent-runs/{run_id}/cancel"), 200, 409)

    def list_runs(self, **params) -> dict:
        return self._ok(self.http.get("/api/v1/agent-runs", params=params), 200)


# ------------------------------------------------------------------------------------------------
# CPU accounting: where the 2 cores went during a phase


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, CPU seconds of the process plus its reaped children, command name).

    /proc/PID/stat reports times in 10 ms ticks, rounded down per process: hundreds of short-lived live
    processes (the shells of in-flight runs) would show as nothing. For a single-threaded process the
    scheduler's nanosecond runtime (/proc/PID/schedstat) is used instead; reaped children's times
    (cutime, cstime) are accumulated in nanoseconds by the kernel, so those are fine from stat.
    """
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, _, tail = f.read().rpartition(")")
            fields, name = tail.split(), head.partition("(")[2]
            # after "(comm)", 0-based: ppid 1, utime 11, stime 12, cutime 13, cstime 14, num_threads 17
            own = (int(fields[11]) + int(fields[12])) / CLK_TCK
            if fields[17] == "1":
                with open(f"/proc/{entry}/schedstat") as f:
                    own = max(own, int(f.read().split()[0]) / 1e9)
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry)] = (int(fields[1]), own + (int(fields[13]) + int(fields[14])) / CLK_TCK, name)
    return table


def _machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait


def cpu_snapshot(roots: dict[str, int]) -> dict[str, Any]:
    """CPU seconds used so far by each named process tree, by this script, and by the whole machine.

    A process that exited is counted through its parent's cutime/cstime once reaped (sshd's session
    children, for instance), so the device-side commands land on the sshd tree. "client" is this
    process alone plus its reaped children (the load generators): the services are our children too,
    so its tree is not walked.
    """
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, Any] = {}
    ours = {os.getpid()}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                total += table[pid][1]
                ours.add(pid)
                todo.extend(children.get(pid, []))
        out[name] = total
    out["client"] = table.get(os.getpid(), (0, 0.0, ""))[1]
    out["machine"] = _machine_busy()
    out["_others"] = {pid: (cpu, name) for pid, (ppid, cpu, name) in table.items()
                      if pid not in ours and ppid not in ours}  # ppid: our load generators
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float], per: int | None = None) -> dict[str, float]:
    """CPU seconds per tree between two snapshots, plus `other` (the rest of the machine: other
    users of this shared box, and our own short-lived processes); per N: milliseconds per item."""
    d = {k: after[k] - before.get(k, 0.0) for k in after if not k.startswith("_")}
    d["other"] = d["machine"] - sum(v for k, v in d.items() if k != "machine")
    if per:
        return {f"{k}_ms_per": round(v * 1000 / per, 2) for k, v in d.items()}
    return {k: round(v, 2) for k, v in d.items()}


def other_top(before: dict, after: dict, n: int = 4) -> list[str]:
    """The processes outside our trees that used the most CPU between two snapshots, by command name
    (processes that started and ended in between are invisible here)."""
    by_name: dict[str, float] = {}
    for pid, (cpu, name) in after["_others"].items():
        prev = before["_others"].get(pid)
        used = cpu - prev[0] if prev and prev[1] == name else cpu if prev is None else 0.0
        by_name[name] = by_name.get(name, 0.0) + used
    return [f"{name} {sec:.2f} s" for name, sec in sorted(by_name.items(), key=lambda kv: -kv[1])[:n] if sec >= 0.01]


# ------------------------------------------------------------------------------------------------
# statistics and output


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary_ms(seconds: list[float]) -> dict:
    """n, median, p90, p99, min, max in milliseconds (3 decimals) of a list of durations in seconds."""
    ms = [x * 1000 for x in seconds]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3), "p90_ms": round(pct(ms, 90), 3),
            "p99_ms": round(pct(ms, 99), 3), "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (so it pastes into docs/benchmarks.md as is)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _fmt(c) -> str:
    # Values are rounded where they are computed; print them as they are.
    return "" if c is None else str(c)


def machine_info() -> dict:
    """What the figures were measured on: date, cores, load, Python."""
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(), "python": sys.version.split()[0]}


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"JSON results written to {path}")


def log_problems(text: str, limit: int = 12) -> list[str]:
    """WARNING/ERROR lines of a service log grouped by message (ids and numbers masked), with counts
    and the first time seen, most frequent first."""
    groups: dict[str, list] = {}
    for line in text.splitlines():
        m = re.match(r"(\S+ \S+) (WARNING|ERROR|CRITICAL) (.*)", line)
        if not m:
            continue
        key = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", m.group(3))
        key = re.sub(r"\b\d+(\.\d+)?\b", "<n>", key)
        groups.setdefault(key, [0, m.group(1)])[0] += 1
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])[:limit]
    return [f"{n} x (first at {first}) {msg}" for msg, (n, first) in ranked]
