"""Run latency, throughput and one worker's capacity over a loopback sshd (issue 3's benchmark).

Starts embedded PostgreSQL and Redis, a throwaway OpenSSH sshd (MaxSessions/MaxStartups raised),
`agentruns api` (gunicorn, 2 gevent workers), ONE `agentruns worker` (threads pool, --concurrency
1100) and `agentruns beat`, all with default settings (only the shutdown grace is cut to 5 s so a
failed run cleans up fast), then measures in one run:
  1. latency of a no-op run (custom provider, command `true`): POST with "wait" until terminal, next
     to a bare paramiko exec, the ssh driver alone and a bare Celery no-op round trip (interleaved);
  2. throughput: 400 no-op runs over 4 ssh devices (max_concurrent_runs 8 each), POSTed by 4
     client processes x 4 threads, from the first POST to the last finished_at;
  2b. drain: the same, but POSTed while the worker is stopped (SIGSTOP), timed from its resume: what
     the worker side does with a backlog, without the API's CPU in the window;
  2c. ceiling: the same number of no-op executions straight through the ssh driver in this process
     (and, as the raw baseline, bare paramiko execs of `true`), 32 at a time over 4 connections: the
     device side shares these cores, so this is the most any service could reach here;
  3. capacity: 1,000 in-flight `sleep 120` runs (10 devices x max_concurrent_runs 100) in the one worker
     process: time until all started, its RSS, then cancel all and check nothing is left running.
The phases are in bench/_run_phases.py.

    python -m bench.run_latency [--samples 50] [--runs 400] [--inflight 1000] [--json out.json]
"""
from __future__ import annotations

import argparse
import subprocess
import time
from functools import partial

import psycopg
import redis

from agentruns.embedded.processes import ServiceProcess
from bench._run_phases import (
    CAP_DEVICES,
    CAP_SLOTS,
    STAGES,
    TP_DEVICES,
    TP_SLOTS,
    capacity,
    ceiling,
    device_groups,
    latency,
    throughput,
)
from bench._stack import (
    Api,
    Bench,
    log_problems,
    machine_info,
    make_api_key,
    pg_dsn,
    start_api,
    start_services,
    stop_proc,
    table,
    write_json,
)

BUDGET = 400.0
TARGETS = {"overhead_ms": 30.0, "runs_per_s": 100.0, "rss_mb": 400.0}


def setup(bench: Bench, concurrency: int, login_shell: bool = True) -> dict:
    """Services, sshd, api, worker, beat, the devices; everything registered for cleanup."""
    from tests.sshd import start_sshd
    from tests.stack import service_env, start_beat, start_worker

    settings = start_services(bench)
    key = make_api_key(settings)
    first = start_sshd()
    bench.on_exit(first.stop)
    sshd = first.spawn(extra_config={"MaxSessions": "2000", "MaxStartups": "500:30:1000"})
    bench.on_exit(sshd.stop)
    first.stop()
    workdir = f"/tmp/agentruns-bench-device-{time.time_ns()}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    bench.on_exit(sshd.run_as_user, f"rm -rf {workdir}")
    dsn = pg_dsn(settings)
    bench.on_exit(_kill_leftovers, dsn, sshd.username)  # runs after the worker has been stopped
    env = service_env(settings, shutdown_grace_seconds=5)
    url = start_api(bench, env, workers=2)
    worker = start_worker(env, concurrency=concurrency, name="bench-worker")
    bench.on_exit(stop_proc, worker)
    beat = start_beat(env)
    bench.on_exit(stop_proc, beat)
    api = Api(url, key, connections=64)
    bench.on_exit(api.close)
    r = redis.Redis.from_url(settings.redis_url)
    bench.on_exit(r.close)
    device = {"kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port, "username": sshd.username,
              "private_key": sshd.private_key, "host_key": sshd.host_key, "default_cwd": workdir,
              "login_shell": login_shell}
    for i in range(TP_DEVICES):
        api.create_device({**device, "id": f"tp-{i}", "max_concurrent_runs": TP_SLOTS})
    for i in range(CAP_DEVICES):
        api.create_device({**device, "id": f"cap-{i}", "max_concurrent_runs": CAP_SLOTS})
    if sshd.proc is None:  # spawn() returns a started server
        raise RuntimeError("bug: the spawned sshd has no process")
    pids = {**bench.pids, "worker": worker.pid, "beat": beat.pid, "sshd": sshd.proc.pid}
    bench.procs.update(worker=worker, beat=beat)
    return dict(settings=settings, key=key, url=url, sshd=sshd, workdir=workdir, dsn=dsn, worker=worker, api=api,
                pids=pids, redis=r, login_shell=login_shell)


def _kill_leftovers(dsn: str, user: str) -> None:
    """Last resort at exit: SIGKILL the process groups our runs started that are still alive on the device."""
    with psycopg.connect(dsn) as conn:
        pgids = {r[0] for r in conn.execute("SELECT pgid FROM runs WHERE pgid IS NOT NULL")}
    alive = device_groups(user) & pgids
    for pgid in alive:
        subprocess.run(["kill", "-KILL", "--", f"-{pgid}"], capture_output=True)
    if alive:
        print(f"cleanup: killed {len(alive)} leftover process groups on the device")


def _service(proc: object) -> ServiceProcess:
    """An entry of Bench.procs (typed `object` there): all of them are ServiceProcess."""
    if not isinstance(proc, ServiceProcess):
        raise TypeError(f"bug: Bench.procs holds a {type(proc).__name__}, not a ServiceProcess")
    return proc


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cpu(cpu: dict, names: list[str]) -> list:
    return [cpu.get(f"{k}_ms_per") for k in names]


def _mid(d: dict) -> str:
    return f"{d['median_ms']} / {d['p90_ms']}"


def figures(r: dict) -> list[list]:
    """Rows of the summary table: figure, measured, target, result."""
    L, T, D, X, C = r.get("latency"), r.get("throughput"), r.get("drain"), r.get("ceiling"), r.get("capacity")
    rows = []
    if L:
        rows += [["no-op run, POST with wait until terminal: median / p90 ms", _mid(L["run"]), "", ""],
                 ["baseline: bare paramiko exec of `true`: median / p90 ms", _mid(L["bare_exec"]), "", ""],
                 ["baseline: login-shell exec, prompt on stdin: median / p90 ms", _mid(L["login_exec"]), "", ""],
                 ["baseline: bare Celery no-op round trip: median / p90 ms", _mid(L["celery"]), "", ""],
                 ["info: ssh driver alone, custom `true`: median / p90 ms", _mid(L["driver"]), "", ""],
                 ["overhead = median(run) - median(bare exec), ms", L["overhead_ms"], "< 30",
                  verdict(L["overhead_ms"] < TARGETS["overhead_ms"])],
                 ["#16: added = median(run) - median(login-shell exec), in Celery round trips",
                  f"{L['added_over_login_exec_ms']} ms = {L['added_in_celery_round_trips']}x", "<= 3x",
                  verdict(L["added_in_celery_round_trips"] <= 3)]]
    if T:
        layout = f"{T['devices']} devices x {T['max_concurrent_runs_per_device']} slots"
        rows += [[f"throughput: {T['runs']} no-op runs over {layout}, runs/s", T["runs_per_s"], ">= 100",
                  verdict((T["runs_per_s"] or 0) >= TARGETS["runs_per_s"])],
                 ["info: throughput until 99 % had finished, runs/s", T["runs_per_s_to_99_percent"], "", ""],
                 ["info: posting all runs took, s", T["posting_s"], "", ""],
                 ["throughput: succeeded", f"{T['succeeded']} / {T['runs']} (failed {T['failed']}, "
                  f"POST errors {T['post_errors']})", str(T["runs"]), verdict(T["succeeded"] == T["runs"])]]
    if D:
        rows += [[f"info: drain {D['runs']} queued no-op runs (worker resumed after the POSTs), runs/s",
                  D["runs_per_s"], "", ""],
                 ["drain: succeeded", f"{D['succeeded']} / {D['runs']} (failed {D['failed']}, "
                  f"POST errors {D['post_errors']})", str(D["runs"]), verdict(D["succeeded"] == D["runs"])]]
    if X:
        rows += [[f"ceiling: {X['runs']} bare paramiko execs of `true`, {X['parallel']} at a time, runs/s",
                  X["bare_exec"]["runs_per_s"], "", ""],
                 [f"ceiling: {X['runs']} no-op runs through the ssh driver alone (no API, queue or database), runs/s",
                  X["driver"]["runs_per_s"], "", ""]]
        if "login_exec" in X:  # issue #16's ceiling: login-shell execs with the prompt on stdin
            rows.append([f"ceiling: {X['runs']} bare login-shell execs with the prompt on stdin, "
                         f"{X['parallel']} at a time, runs/s", X["login_exec"]["runs_per_s"], "", ""])
            if T and T.get("runs_per_s"):
                share = round(T["runs_per_s"] / X["login_exec"]["runs_per_s"], 2)
                rows.append(["#16: no-op throughput as a share of the login-shell exec ceiling", share, ">= 0.35",
                             verdict(share >= 0.35)])

    if C:
        n, h = C["inflight_target"], C["worker_holding"]
        rows += [["capacity: `sleep 120` runs started in one worker (s until all)",
                  f"{C['started']} / {n} ({C['all_started_s']} s)", str(n), verdict(C["started"] == n)],
                 ["capacity: worker RSS holding them, MB", f"{h['rss_mb']} (idle {C['worker_idle']['rss_mb']}, "
                  f"{h['threads']} threads)", "< 400", verdict(h["rss_mb"] < TARGETS["rss_mb"])],
                 ["capacity: canceled after cancel-all (s until none live)",
                  f"{C['canceled']} / {n} ({C['all_terminal_after_cancel_s']} s)", str(n), verdict(C["canceled"] == n)],
                 ["info: running run, cancel request -> finished: median / p90 ms",
                  _mid(C["cancel_request_to_finished"]) if C["cancel_request_to_finished"]["n"] else "", "", ""],
                 ["capacity: our process groups left on the device (pgrep `sleep 120`)",
                  f"{C['leftover_process_groups']} ({C['sleep_left_pgrep']})", "0",
                  verdict(C["leftover_process_groups"] == 0)]]
    return rows


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"\nRun latency / throughput / capacity ({m['date_utc']}, {m['cpus']} CPUs, load average at start "
          f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}; "
          f"one worker --concurrency {r['config']['concurrency']}"
          f"{'' if r['config']['login_shell'] else '; devices with login_shell false'})")
    print(table(["figure", "measured", "target", "result"], figures(r)))
    if L := r.get("latency"):
        print(f"\nno-op run, where the time goes ({L['run']['n']} runs, from their own timestamps):")
        print(table(["stage", "median ms", "p90 ms", "n"], [[name, L["stages"][name].get("median_ms"),
                    L["stages"][name].get("p90_ms"), L["stages"][name]["n"]] for name, _, _ in STAGES]))
    names = ["api", "worker", "postgres", "redis", "sshd", "beat", "client", "other", "machine"]
    cpu_rows = []
    if T := r.get("throughput"):
        f = T["finished_by_s"]
        print(f"\nthroughput: seconds from the first POST until 50 / 90 / 99 / 100 % of the runs had finished: "
              f"{f.get('p50')} / {f.get('p90')} / {f.get('p99')} / {f.get('p100')}; worker log: {T['worker_log']}")
        cpu_rows.append(["throughput, first POST to 99 % finished", *_cpu(T["cpu_ms_per_run"], names)])
    if D := r.get("drain"):
        f = D["finished_by_s"]
        print(f"\ndrain: seconds from the resume until 50 / 90 / 99 / 100 % of the runs had finished: "
              f"{f.get('p50')} / {f.get('p90')} / {f.get('p99')} / {f.get('p100')}; worker log: {D['worker_log']}")
        cpu_rows.append(["drain, resume to 99 % finished", *_cpu(D["cpu_ms_per_run"], names)])
    if X := r.get("ceiling"):
        cpu_rows.append(["ceiling, bare execs (bench = paramiko)", *_cpu(X["bare_exec"]["cpu_ms_per_run"], names)])
        cpu_rows.append(["ceiling, ssh driver alone (bench = driver)", *_cpu(X["driver"]["cpu_ms_per_run"], names)])
        if "login_exec" in X:
            cpu_rows.append(["ceiling, login-shell execs (bench = paramiko)",
                             *_cpu(X["login_exec"]["cpu_ms_per_run"], names)])
    if C := r.get("capacity"):
        cpu_rows.append(["capacity, POSTs until all started (or 40 s)", *_cpu(C["cpu_ms_per_run_to_start"], names)])
        cpu_rows.append(["capacity, cancel-all until none live", *_cpu(C["cpu_ms_per_run_to_cancel"], names)])
        st = C["stranded"]
        print(f"\ncapacity: when measured {C['running_when_measured']} running, {C['queued_when_measured']} queued "
              f"({st['queued_on_devices_with_free_slots']} of them on devices with free slots: {st['per_device']}); "
              f"`sleep 120` processes on the device {C['sleep_processes_on_device']}; worker CPU while holding them "
              f"(% of one core): {C['worker_cpu_while_holding_percent_of_a_core']}; "
              f"worker VmHWM {C['worker_after']['hwm_mb']} MB; "
              f"final statuses {C['final_statuses']}; worker log: {C['worker_log']}")
    if cpu_rows:
        print("\nCPU per run, ms, by process tree (sshd includes the commands it ran on the device; other = the rest "
              "of this shared machine):")
        print(table(["window", "gunicorn", "worker", "postgres", "redis", "sshd", "beat", "bench", "other", "machine"],
                    cpu_rows))
        T, C = T or {}, C or {}
        for label, top in (("throughput", T.get("other_top")), ("capacity start", C.get("other_top_to_start")),
                           ("capacity cancel", C.get("other_top_to_cancel"))):
            if top:
                print(f"other, busiest processes during {label}: {', '.join(top)}")
    for name, lines in r.get("log_problems", {}).items():
        if lines:
            print(f"\n{name} log ({r['logs'][name]}), WARNING/ERROR messages:")
            print("\n".join("  " + line[:300] for line in lines))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50, help="sequential no-op runs for the latency")
    parser.add_argument("--runs", type=int, default=400, help="no-op runs for the throughput")
    parser.add_argument("--inflight", type=int, default=1000, help="`sleep 120` runs for the capacity")
    parser.add_argument("--concurrency", type=int, default=1100, help="the worker's --concurrency")
    parser.add_argument("--phases", default="latency,throughput,drain,ceiling,capacity")
    parser.add_argument("--no-login-shell", dest="login_shell", action="store_false",
                        help="devices with login_shell false (not the default): what the login shell costs")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    result = {"benchmark": "run_latency", "machine": machine_info(), "config": vars(args) | {"targets": TARGETS}}
    phases = args.phases.split(",")
    try:
        with Bench(BUDGET, "runs") as bench:
            s = setup(bench, args.concurrency, args.login_shell)
            try:
                for name, fn, arg in (("latency", latency, args.samples), ("throughput", throughput, args.runs),
                                      ("drain", partial(throughput, backlog=True), args.runs),
                                      ("ceiling", ceiling, args.runs),
                                      ("capacity", capacity, args.inflight)):
                    if name in phases:
                        print(f"{name} ...", flush=True)
                        result[name] = fn(bench, s, arg)
            finally:
                procs = {name: _service(p) for name, p in bench.procs.items()}
                result["log_problems"] = {name: log_problems(p.log()) for name, p in procs.items()}
                result["logs"] = {name: str(p.log_path) for name, p in procs.items()}
    finally:
        print_report(result)
        write_json(args.json_path, result)
    return result


if __name__ == "__main__":
    main()
