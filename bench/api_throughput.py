"""API throughput and latency against a local gunicorn (issue 2's benchmark).

Starts its own embedded PostgreSQL and Redis, `agentruns api` (gunicorn, gevent, 2 workers) and no
Celery worker (created runs stay queued; their tasks pile up in Redis). Each case is a closed loop:
PROCS load-generator processes with CONNS keep-alive http.client connections each (one thread per
connection) send requests back to back for WARMUP + DURATION seconds; only requests started inside
the DURATION window count. The baseline is GET /healthz, a trivial Flask view in the same app and
server, measured in the same run, so the ratios cancel out most of this machine's noise.

    python -m bench.api_throughput [--duration 5] [--procs 4] [--conns 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import queue
import signal
import threading
import time
import uuid
from urllib.parse import urlsplit

import psycopg

from bench._stack import (
    Api,
    Bench,
    cpu_delta,
    cpu_snapshot,
    machine_info,
    make_api_key,
    other_top,
    pg_dsn,
    start_api,
    start_services,
    summary_ms,
    table,
    write_json,
)

BUDGET = 300.0

# name, method, path template, expected status, what it exercises
CASES = [
    ("GET /healthz (baseline)", "GET", "/healthz", 200),
    ("POST /api/v1/agent-runs", "POST", "/api/v1/agent-runs", 201),
    ("POST /api/v1/agent-runs + Idempotency-Key", "POST", "/api/v1/agent-runs", 201),
    ("GET /api/v1/agent-runs/{id}", "GET", "/api/v1/agent-runs/{id}", 200),
    ("GET /api/v1/agent-runs?limit=20", "GET", "/api/v1/agent-runs?limit=20", 200),
]
# Issue #16: gunicorn CPU per request in /healthz CPUs, (must reach, goal); the other cases have none.
CPU_TARGETS = {"POST /api/v1/agent-runs": (5.0, 3.0)}
RUN_BODY = {"prompt": "benchmark", "computer_id": "bench-local", "provider": "custom", "command": "true"}


def _connection_loop(url: str, key: str, case: tuple, run_id: str, t_start: float, t_end: float,
                     out: dict, lock: threading.Lock) -> None:
    """One keep-alive connection sending requests back to back until t_end."""
    name, method, path, expected = case
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:  # start_api always returns http://127.0.0.1:PORT
        raise ValueError(f"bug: API URL {url!r} has no host")
    conn = http.client.HTTPConnection(host, parts.port, timeout=30)
    path = path.replace("{id}", run_id)
    body = json.dumps(RUN_BODY).encode() if method == "POST" else None
    headers = {"Authorization": f"Bearer {key}", "Connection": "keep-alive"}
    if body:
        headers["Content-Type"] = "application/json"
    idem = "Idempotency-Key" in name
    prefix = uuid.uuid4().hex
    lat: list[float] = []
    samples: list[str] = []
    errors, i = 0, 0
    while True:
        t0 = time.monotonic()
        if t0 >= t_end:
            break
        if idem:
            i += 1
            headers["Idempotency-Key"] = f"{prefix}-{i}"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            ok = resp.status == expected
            if not ok and len(samples) < 3:
                samples.append(f"{resp.status} {data[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            ok = False
            if len(samples) < 3:
                samples.append(repr(exc))
            conn.close()
            conn = http.client.HTTPConnection(host, parts.port, timeout=30)
        t1 = time.monotonic()
        if t0 >= t_start:
            if ok:
                lat.append(t1 - t0)
            else:
                errors += 1
    conn.close()
    with lock:
        out["lat"].extend(lat)
        out["errors"] += errors
        out["samples"].extend(samples)


def _load_process(url, key, case, run_id, conns, t_start, t_end, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    out, lock = {"lat": [], "errors": 0, "samples": []}, threading.Lock()
    threads = [threading.Thread(target=_connection_loop, args=(url, key, case, run_id, t_start, t_end, out, lock))
               for _ in range(conns)]
    for t in threads:
        t.start()
    # This process's CPU (all its threads) inside the measured window, for the CPU split.
    time.sleep(max(0.0, t_start - time.monotonic()))
    cpu0 = time.process_time()
    time.sleep(max(0.0, t_end - time.monotonic()))
    out["cpu_s"] = time.process_time() - cpu0
    for t in threads:
        t.join()
    results.put(out)


def run_case(bench: Bench, url: str, key: str, case: tuple, run_id: str, procs: int, conns: int,
             warmup: float, duration: float) -> dict:
    """Run one case with `procs` processes x `conns` connections; return its figures."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    t_start = time.monotonic() + 0.3 + warmup  # CLOCK_MONOTONIC is shared by all processes
    t_end = t_start + duration
    workers = [ctx.Process(target=_load_process, args=(url, key, case, run_id, conns, t_start, t_end, results),
                           daemon=True) for _ in range(procs)]
    for w in workers:
        w.start()
    roots = {k: v for k, v in bench.pids.items() if k in ("api", "postgres", "redis")}
    time.sleep(max(0.0, t_start - time.monotonic()))
    cpu0 = cpu_snapshot(roots)
    time.sleep(max(0.0, t_end - time.monotonic()))
    cpu1 = cpu_snapshot(roots)
    outs = []
    try:
        for _ in workers:
            outs.append(results.get(timeout=max(1.0, t_end - time.monotonic() + 40)))
    except queue.Empty:
        raise RuntimeError(f"{case[0]}: a load generator did not report back") from None
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()
    lat = [x for o in outs for x in o["lat"]]
    errors = sum(o["errors"] for o in outs)
    stats = summary_ms(lat)
    cpu1["client"] = cpu0["client"] + sum(o["cpu_s"] for o in outs)  # the load generators, same window
    cpu = cpu_delta(cpu0, cpu1, per=len(lat) or None)
    return {"case": case[0], "requests": len(lat), "errors": errors, "req_per_s": round(len(lat) / duration, 1),
            **stats, "cpu_ms_per_request": cpu, "other_top": other_top(cpu0, cpu1),
            "error_samples": [s for o in outs for s in o["samples"]][:3]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each case")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--conns", type=int, default=2, help="keep-alive connections per process")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--only", default="", help="comma-separated words: run only the cases whose name has one "
                        "(e.g. `POST,{id}`; the baselines always run)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    from tests.stack import service_env

    info = machine_info()
    rows = []
    with Bench(BUDGET, "api") as bench:
        settings = start_services(bench)
        key = make_api_key(settings)
        url = start_api(bench, service_env(settings), workers=args.workers)
        api = Api(url, key)
        bench.on_exit(api.close)
        if bench.tmp is None:
            raise RuntimeError("bug: Bench.tmp is set on entering the Bench context")
        device_cwd = bench.tmp / "device"
        device_cwd.mkdir()
        api.create_device({"id": "bench-local", "kind": "computer", "driver": "local", "default_cwd": str(device_cwd)})
        run_id = api.create_run(RUN_BODY)["id"]
        # The baseline runs first and again last: a difference between the two shows drift in the
        # machine's load during the run (it is shared).
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        cases = [c for c in CASES if "baseline" in c[0] or not words or any(w in c[0] for w in words)]
        for case in cases + [(CASES[0][0].replace("baseline", "baseline again"), *CASES[0][1:])]:
            bench.check(case[0])
            rows.append(run_case(bench, url, key, case, run_id, args.procs, args.conns, args.warmup, args.duration))
            print(f"  {case[0]}: {rows[-1]['req_per_s']} req/s, p50 {rows[-1].get('median_ms')} ms, "
                  f"p99 {rows[-1].get('p99_ms')} ms, errors {rows[-1]['errors']}", flush=True)
        with psycopg.connect(pg_dsn(settings)) as conn:
            row = conn.execute("SELECT count(*) FROM runs").fetchone()
            if row is None:
                raise RuntimeError("bug: SELECT count(*) returned no row")
            runs_in_table = row[0]
    base = rows[0]
    # The figure: gunicorn CPU per request in trivial-request CPUs, against the mean of the
    # two /healthz baselines (the first and the last case), so that drift during the run cancels.
    base_api = [b["cpu_ms_per_request"].get("api_ms_per") for b in (rows[0], rows[-1])]
    base_api = [b for b in base_api if b]
    base_cpu = sum(base_api) / len(base_api) if base_api else None
    for r in rows:
        api_ms = r["cpu_ms_per_request"].get("api_ms_per")
        r["api_cpu_vs_baseline"] = round(api_ms / base_cpu, 2) if api_ms and base_cpu else None
        r["api_cpu_target"] = CPU_TARGETS.get(r["case"])
    for r in rows:
        r["req_per_s_vs_baseline"] = round(r["req_per_s"] / base["req_per_s"], 3) if base["req_per_s"] else None
        r["p50_vs_baseline"] = round(r["median_ms"] / base["median_ms"], 2) if r.get("median_ms") else None
    result = {"benchmark": "api_throughput", "machine": info,
              "config": {"gunicorn_workers": args.workers, "worker_class": "gevent", "load_processes": args.procs,
                         "connections_per_process": args.conns, "duration_s": args.duration,
                         "warmup_s": args.warmup, "runs_in_table_after": runs_in_table},
              "cases": rows}
    print_report(result)
    write_json(args.json_path, result)
    return result


def print_report(result: dict) -> None:
    c = result["config"]
    print(f"\nAPI throughput ({result['machine']['date_utc']}, {result['machine']['cpus']} CPUs, "
          f"gunicorn {c['gunicorn_workers']} {c['worker_class']} workers, {c['load_processes']} client processes x "
          f"{c['connections_per_process']} keep-alive connections, {c['duration_s']} s per case)")
    print(table(["case", "req/s", "p50 ms", "p99 ms", "errors", "req/s ÷ baseline", "p50 × baseline"],
                [[r["case"], r["req_per_s"], r.get("median_ms"), r.get("p99_ms"), r["errors"],
                  r["req_per_s_vs_baseline"], r["p50_vs_baseline"]] for r in result["cases"]]))
    print("\nCPU per request during the measured window, ms (other = the rest of this shared machine):")
    keys = ("api", "postgres", "redis", "client", "other", "machine")
    print(table(["case", "gunicorn workers", "postgres", "redis", "load generators", "other", "whole machine"],
                [[r["case"], *(r["cpu_ms_per_request"].get(f"{k}_ms_per") for k in keys)] for r in result["cases"]]))
    print("\ngunicorn CPU per request in trivial-request CPUs (÷ the mean of the two /healthz baselines' "
          "gunicorn CPU per request, same run):")
    cases = [r for r in result["cases"] if "baseline" not in r["case"]]
    rows = []
    for r in cases:
        target = r.get("api_cpu_target") or (None, None)
        rows.append([r["case"], r["cpu_ms_per_request"].get("api_ms_per"), r.get("api_cpu_vs_baseline"),
                     *(f"<= {t:g}x" if t else "" for t in target), _met(r)])
    print(table(["case", "gunicorn CPU ms", "÷ /healthz CPU", "must reach", "goal", "met"], rows))
    for r in result["cases"]:
        if r["other_top"]:
            print(f"  other, busiest processes during {r['case']}: {', '.join(r['other_top'])}")
    for r in result["cases"]:
        if r["error_samples"]:
            print(f"  {r['case']} errors, e.g.: {r['error_samples']}")
    print(f"  (runs in the table at the end: {c['runs_in_table_after']})")


def _met(r: dict) -> str:
    target, ratio = r.get("api_cpu_target"), r.get("api_cpu_vs_baseline")
    if not target or ratio is None:
        return ""
    return "goal" if ratio <= target[1] else "yes" if ratio <= target[0] else "no"


if __name__ == "__main__":
    main()
