"""The three measurements of bench.run_latency: latency, throughput, capacity.

Each takes the Bench (deadline, cleanups) and the dict `s` built by run_latency.setup() and returns
plain figures. CPU is accounted per process tree (see bench._stack.cpu_snapshot) so a miss can be
attributed to the API, the worker, PostgreSQL, Redis or the device side (sshd and the commands it ran).
"""
from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import queue
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import urlsplit

import psycopg

from bench._baselines import LOGIN_EXEC, BareExec, Baseline, CeleryNoop, DriverNoop
from bench._stack import CLK_TCK, Api, Bench, cpu_delta, cpu_snapshot, other_top, summary_ms
from workers.leases import slots_key

NOOP = {"prompt": "benchmark", "provider": "custom", "command": "true"}
WARMUP = 5


def _epoch(value: datetime | str) -> float:
    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(value).timestamp()


def _ts(value: datetime | str | None) -> float | None:
    if value is None:
        return None
    return _epoch(value)


def _log_counts(text: str) -> dict:
    """What the worker log says about a phase: task outcomes and the warnings worth a look."""
    executed = [int(n) for n in re.findall(r": 'executed:(\d+)'", text)]
    return {"tasks_executed": len(executed), "runs_executed": sum(executed),
            "tasks_busy": text.count(": 'busy'"), "tasks_nothing_queued": text.count(": 'nothing-queued'"),
            "sweeper_reenqueued": sum(int(m) for m in re.findall(r"re-enqueued (\d+) stale", text)),
            "lease_lost_warnings": text.count("lost its lease"),
            "errors": text.count(" ERROR ") + text.count("Traceback")}


# --- 1. latency -----------------------------------------------------------------------------------

# Where a no-op run's time goes, from its own timestamps (one clock: same machine). PostgreSQL's now()
# is the transaction's start, i.e. the time of that transaction's first statement.
# Issue #16's layout: the throughput phases spread no-op runs over TP_DEVICES devices of TP_SLOTS
# slots; the ceiling runs at that parallelism; the capacity phase holds its runs on CAP_DEVICES
# devices of CAP_SLOTS slots.
TP_DEVICES, TP_SLOTS = 4, 8
CAP_DEVICES, CAP_SLOTS = 10, 100
# The capacity phase's command: long enough to outlast posting 1,000 runs on a busy machine, the
# wait for all of them to start and the hold.
HOLD = "sleep 120"

STAGES = [
    ("client POST -> row inserted (API: auth, validation)", "sent", "created"),
    ("row inserted -> claimed (API: commit, send_task; Celery delivery, reads, device slot)", "created", "claimed"),
    ("claimed -> started (ssh channel, remote wrapper)", "claimed", "started"),
    ("started -> finished (login shell, custom wrapper, `true`)", "started", "finished"),
    ("finished -> recorded (worker: parse, finish transaction)", "finished", "recorded"),
    ("recorded -> client has the response (commit, pub/sub, long-poll)", "recorded", "received"),
]


def latency(bench: Bench, s: dict, samples: int) -> dict:
    api, sshd = s["api"], s["sshd"]
    bare, drv = BareExec(sshd), DriverNoop(sshd, s["workdir"], s["login_shell"])
    login = BareExec(sshd, *LOGIN_EXEC)
    celery = CeleryNoop(bench, s["settings"].redis_url)
    for baseline in (bare, login, drv, celery):
        bench.on_exit(baseline.close)
    body = {**NOOP, "computer_id": "tp-0", "wait": 30, "metadata": {"phase": "latency"}}
    lat: dict[str, list[float]] = {"run": [], "bare_exec": [], "login_exec": [], "driver": [], "celery": []}
    times: dict[str, dict] = {}
    try:
        # Interleaved, one sample of each per round: a burst of load elsewhere hits all four alike.
        for i in range(WARMUP + samples):
            bench.check("latency")
            sent, t0 = time.time(), time.perf_counter()
            run = api.create_run(body)
            e2e, received = time.perf_counter() - t0, time.time()
            if run["status"] != "succeeded":
                raise RuntimeError(f"no-op run ended {run['status']}: {run.get('error')}")
            b, lg, d, c = bare.sample(), login.sample(), drv.sample(), celery.sample()
            if i < WARMUP:
                continue
            for k, v in zip(lat, (e2e, b, lg, d, c), strict=True):
                lat[k].append(v)
            times[run["id"]] = {"sent": sent, "received": received}
    finally:
        for baseline in (bare, login, drv, celery):
            baseline.close()
    with psycopg.connect(s["dsn"]) as conn:
        rows = conn.execute(
            "SELECT r.id::text, r.created_at, r.started_at, r.finished_at, "
            "  (SELECT min(at) FROM run_events e WHERE e.run_id = r.id AND e.type = 'status' "
            "   AND e.data LIKE '%%running%%'), "
            "  (SELECT max(at) FROM run_events e WHERE e.run_id = r.id AND e.type = 'status') "
            "FROM runs r WHERE r.id::text = ANY(%s)", (list(times),)).fetchall()
    for rid, *stamps in rows:
        times[rid].update(zip(("created", "started", "finished", "claimed", "recorded"), map(_ts, stamps),
                              strict=True))
    out = {k: summary_ms(v) for k, v in lat.items()}
    out["stages"] = {name: summary_ms([t[b] - t[a] for t in times.values() if t.get(a) and t.get(b)])
                     for name, a, b in STAGES}
    out["overhead_ms"] = round(out["run"]["median_ms"] - out["bare_exec"]["median_ms"], 3)
    # Issue #16's figure: what the service adds to the device's unavoidable login-shell exec, counted
    # in bare Celery round trips measured in the same run.
    added = out["run"]["median_ms"] - out["login_exec"]["median_ms"]
    out["added_over_login_exec_ms"] = round(added, 3)
    out["added_in_celery_round_trips"] = round(added / out["celery"]["median_ms"], 2)
    return out


# --- 2. throughput --------------------------------------------------------------------------------

def _poster(url: str, key: str, indices: list[int], phase: str, threads: int, results) -> None:
    """POST the runs from `threads` keep-alive connections. Plain http.client, like api_throughput's
    load generators: the benchmark's own CPU competes with the system on the same cores (httpx
    cost about twice as much per request)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:  # start_api always returns http://127.0.0.1:PORT
        raise ValueError(f"bug: API URL {url!r} has no host")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    local = threading.local()
    stamps, errors = [], []

    def post(i: int) -> None:
        stamps.append(time.time())
        body = json.dumps({**NOOP, "computer_id": f"tp-{i % TP_DEVICES}", "metadata": {"phase": phase, "i": i}})
        try:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection(host, parts.port, timeout=90)
            local.conn.request("POST", "/api/v1/agent-runs", body=body, headers=headers)
            resp = local.conn.getresponse()
            data = resp.read()
            if resp.status != 201:
                errors.append(f"{resp.status} {data[:300]!r}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc)[:300])
            local.conn.close()
            del local.conn

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, indices))
    results.put({"first": min(stamps), "last_post_done": time.time(), "errors": errors})


def _count_phase(api: Api, phase: str) -> tuple[dict, list[float]]:
    """Runs of a phase per terminal status (list endpoint, every page) and every finished_at."""
    counts, finished = {}, []
    for st in ("succeeded", "failed", "canceled"):
        counts[st], cursor = 0, None
        while True:
            page = api.list_runs(status=st, limit=100, **{"metadata[phase]": phase},
                                 **({"cursor": cursor} if cursor else {}))
            counts[st] += len(page["data"])
            finished += [_epoch(r["finished_at"]) for r in page["data"] if r["finished_at"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
    return counts, sorted(finished)


def throughput(bench: Bench, s: dict, runs: int, procs: int = 4, threads: int = 4, backlog: bool = False) -> dict:
    """POST `runs` no-op runs and time them until the last finished.

    backlog=False (phase "throughput"): the worker runs them while they are being POSTed; timed from
    the first POST. backlog=True (phase "drain"): the worker is stopped (SIGSTOP) while they are
    POSTed, then resumed; timed from the resume, so the API's share of the CPU is not in the window.
    """
    api, phase, log_at = s["api"], "drain" if backlog else "throughput", len(s["worker"].log())
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    posters = [ctx.Process(target=_poster, args=(s["url"], s["key"], list(range(runs))[p::procs], phase, threads,
                                                 results), daemon=True) for p in range(procs)]
    if backlog:
        os.kill(s["worker"].pid, signal.SIGSTOP)
    else:
        cpu0 = cpu_snapshot(s["pids"])
    for p in posters:
        p.start()
    outs = []
    try:
        for _ in posters:
            outs.append(results.get(timeout=max(1.0, bench.left())))
    except queue.Empty:
        raise RuntimeError("a posting process did not report back") from None
    finally:
        for p in posters:
            p.join(5)
            if p.is_alive():
                p.kill()
        if backlog:
            cpu0, resumed = cpu_snapshot(s["pids"]), time.time()
            os.kill(s["worker"].pid, signal.SIGCONT)
    first, cpu1 = resumed if backlog else min(o["first"] for o in outs), None
    while True:  # until nothing of this phase is queued or running (list endpoint by status, every 0.5 s)
        bench.check("throughput: waiting for the runs to finish")
        left = sum(len(api.list_runs(status=st, limit=100, **{"metadata[phase]": phase})["data"])
                   for st in ("queued", "running"))
        if left <= runs // 100 and cpu1 is None:
            cpu1 = cpu_snapshot(s["pids"])  # 99 % done: the work is over, stragglers only wait
        if left == 0:
            break
        time.sleep(0.5)  # the figures come from the runs' own finished_at, not from this poll
    seen_done = time.time()
    if cpu1 is None:  # the loop only ends at left == 0, having taken it at left <= runs // 100
        raise RuntimeError("bug: throughput ended without its CPU snapshot")
    cpu, busiest_others = cpu_delta(cpu0, cpu1, per=runs), other_top(cpu0, cpu1)
    counts, finished = _count_phase(api, phase)
    last_finished = finished[-1] if finished else first
    failed = []
    if counts["failed"]:
        failed = [api.get_run(r["id"]).get("error")
                  for r in api.list_runs(status="failed", limit=5, **{"metadata[phase]": phase})["data"]]
    elapsed = last_finished - first
    n99 = int(len(finished) * 0.99)
    errors = [e for o in outs for e in o["errors"]]
    return {"runs": runs, "backlog": backlog, "devices": TP_DEVICES, "max_concurrent_runs_per_device": TP_SLOTS,
            "client_processes": procs, "threads_per_process": threads, "post_errors": len(errors),
            "post_error_samples": errors[:3],
            "posting_s": round(max(o["last_post_done"] for o in outs) - first, 3),
            "first_post_to_last_finished_s": round(elapsed, 3),
            "runs_per_s": round(counts["succeeded"] / elapsed, 1) if elapsed > 0 else None,
            "first_post_to_all_seen_terminal_s": round(seen_done - first, 3), **counts,
            "finished_by_s": {f"p{q}": round(finished[max(0, int(len(finished) * q / 100) - 1)] - first, 3)
                              for q in (50, 90, 99, 100)} if finished else {},
            "runs_per_s_to_99_percent": round(n99 / (finished[n99 - 1] - first), 1) if n99 else None,
            "failed_error_samples": failed, "cpu_ms_per_run": cpu, "other_top": busiest_others,
            "worker_log": _log_counts(s["worker"].log()[log_at:])}


# --- 2c. ceiling -----------------------------------------------------------------------------------

def ceiling(bench: Bench, s: dict, runs: int, parallel: int = TP_DEVICES * TP_SLOTS) -> dict:
    """The device side alone at the throughput phase's parallelism (TP_DEVICES x TP_SLOTS), in this
    process: no API, queue or database. On this machine sshd and the commands it starts share the
    cores with the service, so the driver's rate is a ceiling no end-to-end figure here can pass.
      - bare_exec: paramiko `true`, one open transport per device, a channel each (raw SSH exec);
      - login_exec: the same with issue #16's baseline, a login shell reading the prompt on stdin;
      - driver: the ssh driver running the custom provider's invocation of `true`, as a run does
        (remote wrapper, login shell unless --no-login-shell, prompt file, timeout backstop).
    """
    sshd = s["sshd"]
    bare: list[Baseline] = [BareExec(sshd) for _ in range(TP_DEVICES)]
    login: list[Baseline] = [BareExec(sshd, *LOGIN_EXEC) for _ in range(TP_DEVICES)]
    drivers: list[Baseline] = [DriverNoop(sshd, s["workdir"], s["login_shell"]) for _ in range(TP_DEVICES)]
    for b in (*bare, *login, *drivers):
        bench.on_exit(b.close)
    out: dict[str, object] = {"runs": runs, "devices": TP_DEVICES, "parallel": parallel}
    try:
        with ThreadPoolExecutor(parallel) as pool:
            for name, group in (("bare_exec", bare), ("login_exec", login), ("driver", drivers)):
                def one(i: int, group=group) -> float:
                    return group[i % len(group)].sample()

                bench.check(f"ceiling: {name}")
                list(pool.map(one, range(parallel)))  # warm: every connection open
                cpu0, t0 = cpu_snapshot(s["pids"]), time.perf_counter()
                list(pool.map(one, range(runs)))
                elapsed, cpu1 = time.perf_counter() - t0, cpu_snapshot(s["pids"])
                out[name] = {"runs_per_s": round(runs / elapsed, 1), "cpu_ms_per_run": cpu_delta(cpu0, cpu1, per=runs)}
    finally:
        for b in (*bare, *login, *drivers):
            b.close()
    return out


# --- 3. capacity ----------------------------------------------------------------------------------

def _status_mem(pid: int) -> dict:
    f = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                f[name] = int(value.split()[0])
    return {"rss_mb": round(f["VmRSS"] / 1024, 1), "hwm_mb": round(f["VmHWM"] / 1024, 1), "threads": f["Threads"]}


def _user_sys(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def device_groups(user: str) -> set[int]:
    """Process group ids of the device user's live processes."""
    out = subprocess.run(["ps", "-u", user, "-o", "pgid=,stat="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if not line.split()[1].startswith("Z")}


def _stranded(conn, r, phase: str) -> dict:
    """Queued runs on devices that had free slots (running < max and Redis slot holders < max)."""
    rows = conn.execute(
        "SELECT d.tenant_id::text, d.id, d.max_concurrent_runs, count(*) FILTER (WHERE r.status = 'running'), "
        "count(*) FILTER (WHERE r.status = 'queued') FROM runs r JOIN devices d "
        "ON d.tenant_id = r.tenant_id AND d.id = r.target_id WHERE r.metadata->>'phase' = %s "
        "GROUP BY 1, 2, 3 ORDER BY 2", (phase,)).fetchall()
    per_device = {}
    for tenant, dev, cap, running, queued in rows:
        slots = r.zcard(slots_key(tenant, dev))
        per_device[dev] = {"max": cap, "running": running, "queued": queued, "slots_held": slots}
    stranded = sum(d["queued"] for d in per_device.values() if d["running"] < d["max"] and d["slots_held"] < d["max"])
    return {"queued_on_devices_with_free_slots": stranded,
            "per_device": {k: v for k, v in per_device.items() if v["queued"]}}


def capacity(bench: Bench, s: dict, inflight: int, wait_s: float = 40.0) -> dict:
    """HOLD runs: wait up to wait_s after the last POST for all to start (a run started at t=0 must
    still be running when its cancel arrives), read the worker's memory, cancel all, check the device."""
    api, sshd, phase, pid, log_at = s["api"], s["sshd"], "capacity", s["worker"].pid, len(s["worker"].log())
    out = {"inflight_target": inflight, "devices": CAP_DEVICES, "max_concurrent_runs_per_device": CAP_SLOTS,
           "worker_idle": _status_mem(pid)}
    body = {"prompt": "benchmark", "provider": "custom", "command": HOLD, "metadata": {"phase": phase}}
    by_phase = "FROM runs WHERE metadata->>'phase' = 'capacity'"
    with psycopg.connect(s["dsn"], autocommit=True) as conn:
        def count(cond: str) -> int:
            row = conn.execute(f"SELECT count(*) {by_phase} AND {cond}").fetchone()
            if row is None:
                raise RuntimeError("bug: SELECT count(*) returned no row")
            return row[0]

        t0, cpu_t0 = time.time(), cpu_snapshot(s["pids"])
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda i: api.create_run({**body, "computer_id": f"cap-{i % CAP_DEVICES}"})["id"],
                                range(inflight)))
        posting_s = out["posting_s"] = round(time.time() - t0, 3)
        started, out["all_started_s"] = 0, None
        while time.time() - t0 < posting_s + wait_s:
            bench.check("capacity: waiting for runs to start")
            started = count("started_at IS NOT NULL")
            if started >= inflight:
                out["all_started_s"] = round(time.time() - t0, 3)
                break
            time.sleep(0.2)
        out["started"], out["queued_when_measured"] = started, count("status = 'queued'")
        cpu_t = cpu_snapshot(s["pids"])
        out["cpu_ms_per_run_to_start"] = cpu_delta(cpu_t0, cpu_t, per=inflight)
        out["other_top_to_start"] = other_top(cpu_t0, cpu_t)
        out["stranded"] = _stranded(conn, s["redis"], phase)
        u0, s0, w0 = *_user_sys(pid), time.monotonic()
        time.sleep(3.0)  # hold them a moment: memory, and what holding costs in CPU
        u1, s1, w1 = *_user_sys(pid), time.monotonic()
        out["worker_cpu_while_holding_percent_of_a_core"] = {"user": round((u1 - u0) / (w1 - w0) * 100, 1),
                                                             "system": round((s1 - s0) / (w1 - w0) * 100, 1)}
        out["worker_holding"] = _status_mem(pid)
        out["running_when_measured"] = count("status = 'running'")
        out["sleep_processes_on_device"] = len(sshd.pgrep(HOLD))
        t1, cpu_t1 = time.time(), cpu_snapshot(s["pids"])
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(api.cancel, ids))
        out["cancel_posting_s"] = round(time.time() - t1, 3)
        out["all_terminal_after_cancel_s"] = None
        while time.time() - t1 < 60:
            bench.check("capacity: waiting for the cancels")
            if count("status IN ('queued', 'running')") == 0:
                out["all_terminal_after_cancel_s"] = round(time.time() - t1, 3)
                break
            time.sleep(0.2)
        cpu_t = cpu_snapshot(s["pids"])
        out["cpu_ms_per_run_to_cancel"] = cpu_delta(cpu_t1, cpu_t, per=inflight)
        out["other_top_to_cancel"] = other_top(cpu_t1, cpu_t)
        final_statuses: dict[str, int] = dict(conn.execute(f"SELECT status, count(*) {by_phase} GROUP BY 1").fetchall())
        out["final_statuses"] = final_statuses
        out["canceled"] = final_statuses.get("canceled", 0)
        pgids = {r[0] for r in conn.execute(f"SELECT pgid {by_phase} AND pgid IS NOT NULL")}
        # Per run that was running: from its cancel request to its terminal record (tree killed).
        out["cancel_request_to_finished"] = summary_ms([r[0] for r in conn.execute(
            f"SELECT extract(epoch FROM finished_at - cancel_requested_at)::float {by_phase} "
            "AND started_at IS NOT NULL AND cancel_requested_at IS NOT NULL AND finished_at IS NOT NULL")])
    time.sleep(0.5)
    out["leftover_process_groups"] = len(device_groups(sshd.username) & pgids)
    out["sleep_left_pgrep"] = len(sshd.pgrep(HOLD))
    out["worker_after"] = _status_mem(pid)
    out["worker_log"] = _log_counts(s["worker"].log()[log_at:])
    return out
