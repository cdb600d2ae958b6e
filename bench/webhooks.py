"""Webhook delivery throughput, and what webhooks cost a run's latency (issue #14's benchmark).

Starts its own embedded PostgreSQL and Redis, `agentruns api`, one worker (runs and webhooks), beat,
and a receiver on loopback (http.server threads, keep-alive) that checks each request's signature.

- delivery: EVENTS runs are inserted in one statement straight into the runs table, of a tenant with
  one endpoint subscribed to run.*: the outbox trigger writes a run.queued event and a delivery for
  each, as for any run, and NOTIFYs at the commit. Reported: events/s from the commit to the last
  event received, and each event's delay from the commit to its arrival.
- cost: no-op runs (POST with wait, `true` on a local device) of a tenant without webhooks and of a
  tenant whose endpoint receives all three events of each run, interleaved A/B; the difference of
  the medians is set against the noise floor, the difference between the two halves of the A samples.

    python -m bench.webhooks [--events 5000] [--samples 60] [--webhook-workers same|own|none] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg

from agentruns import webhooks
from bench._stack import (
    Api,
    Bench,
    cpu_delta,
    cpu_snapshot,
    machine_info,
    make_api_key,
    pg_dsn,
    start_api,
    start_services,
    stop_proc,
    summary_ms,
    table,
    write_json,
)

BUDGET = 400.0
SEED = """
INSERT INTO runs (id, tenant_id, target_kind, target_id, provider, prompt, cwd, timeout, metadata, status, epoch,
                  stdout_truncated, stderr_truncated, finished_at)
SELECT gen_random_uuid(), t.id, 'sandbox', 'seeded', 'custom', 'p', '/tmp', 60, '{}', 'canceled', 0, false, false,
       now()
FROM tenants t, generate_series(1, %(n)s) WHERE t.name = %(tenant)s"""


def setup(bench: Bench, webhook_workers: str) -> dict:
    from tests.stack import service_env, start_beat, start_worker
    from tests.webhook_receiver import Receiver

    settings = start_services(bench)
    env = service_env(settings, webhook_allow_http=1, webhook_allow_private=1)
    url = start_api(bench, env, workers=2)
    worker = start_worker(env, concurrency=50, name="bench-worker",
                          options=() if webhook_workers == "same" else ("--no-webhooks",))
    bench.on_exit(stop_proc, worker)
    pids = {"worker": worker.pid}
    if webhook_workers == "own":  # webhooks on a worker process of their own
        hooks = start_worker(env, concurrency=4, name="bench-webhooks", options=("--webhooks-only",))
        bench.on_exit(stop_proc, hooks)
        pids["webhook_worker"] = hooks.pid
    beat = start_beat(env)
    bench.on_exit(stop_proc, beat)
    receiver = Receiver(keep_alive=True).start()
    bench.on_exit(receiver.stop)
    apis = {}
    for tenant in ("plain", "hooked", "seeded"):
        apis[tenant] = Api(url, make_api_key(settings, tenant))
        bench.on_exit(apis[tenant].close)
        apis[tenant].create_device({"id": "box", "kind": "sandbox", "driver": "local", "default_cwd": str(bench.tmp),
                                    "max_concurrent_runs": 4})
    secrets = {tenant: apis[tenant].http.post("/api/v1/webhooks", json={"url": receiver.url(f"/{tenant}")})
               .json()["data"]["secret"] for tenant in ("hooked", "seeded")}
    pids = {**bench.pids, **pids, "beat": beat.pid}
    bench.procs.update(worker=worker, beat=beat)
    return dict(settings=settings, apis=apis, receiver=receiver, secrets=secrets, pids=pids,
                deliver=webhook_workers != "none")


def delivery(bench: Bench, s: dict, events: int) -> dict:
    receiver = s["receiver"]
    cpu_before = cpu_snapshot(s["pids"])
    with psycopg.connect(pg_dsn(s["settings"])) as conn:
        conn.execute(SEED, {"n": events, "tenant": "seeded"})
        conn.commit()
        committed = time.time()
    try:
        got = receiver.wait_for("/seeded", events, timeout=bench.left() - 60)
    except AssertionError:
        with psycopg.connect(pg_dsn(s["settings"])) as conn:
            for row in conn.execute("SELECT state, attempts, last_status_code, last_error, count(*) "
                                    "FROM webhook_deliveries GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC LIMIT 10"):
                print("deliveries:", row)
        raise
    last = max(r.at for r in got)
    cpu = cpu_delta(cpu_before, cpu_snapshot(s["pids"]), per=events)
    ids = {webhooks.verify(r.body, r.headers[webhooks.SIGNATURE_HEADER], s["secrets"]["seeded"])["id"] for r in got}
    delays = sorted(r.at - committed for r in got)
    return {"events": events, "received": len(got), "unique_verified": len(ids), "seconds": last - committed,
            "events_per_s": events / (last - committed), "delay_ms": summary_ms(delays), "cpu_ms_per_event": cpu}


def cost(bench: Bench, s: dict, samples: int) -> dict:
    body = {"target_id": "box", "provider": "custom", "command": "true", "prompt": "p", "wait": 30}
    times: dict[str, list[float]] = {"plain": [], "hooked": []}
    for i in range(samples + 5):
        bench.check("cost")
        for tenant in ("plain", "hooked") if i % 2 else ("hooked", "plain"):  # neither always goes first
            started = time.perf_counter()
            run = s["apis"][tenant].create_run({**body, "metadata": {"i": i}}, **{"Idempotency-Key": str(uuid.uuid4())})
            elapsed = time.perf_counter() - started
            if run["status"] != "succeeded":
                raise RuntimeError(f"a no-op run ended {run['status']}: {run}")
            if i >= 5:  # warm-up
                times[tenant].append(elapsed)
    if s["deliver"]:
        s["receiver"].wait_for("/hooked", 3 * (samples + 5), timeout=60)  # every event of the hooked runs arrived
    plain, hooked = times["plain"], times["hooked"]
    noise = abs(statistics.median(plain[::2]) - statistics.median(plain[1::2]))
    return {"samples": samples, "plain_ms": summary_ms(plain), "hooked_ms": summary_ms(hooked),
            "difference_ms": (statistics.median(hooked) - statistics.median(plain)) * 1000,
            "noise_floor_ms": noise * 1000}


def print_report(result: dict) -> None:
    d, c = result.get("delivery"), result.get("cost")
    if d:
        print(f"\ndelivery of {d['events']} events (one endpoint, {d['received']} received, "
              f"{d['unique_verified']} distinct and verified)")
        cpu = d["cpu_ms_per_event"]
        workers = cpu.get("worker_ms_per", 0) + cpu.get("webhook_worker_ms_per", 0)
        print(table(["events/s", "seconds", "delay p50 ms", "delay p99 ms", "worker CPU ms/event",
                     "postgres CPU ms/event"],
                    [[f"{d['events_per_s']:.0f}", f"{d['seconds']:.2f}", f"{d['delay_ms']['median_ms']:.0f}",
                      f"{d['delay_ms']['p99_ms']:.0f}", f"{workers:.2f}", f"{cpu.get('postgres_ms_per', 0):.2f}"]]))
    if c:
        print(f"\nno-op run latency (POST with wait), {c['samples']} interleaved samples each")
        print(table(["tenant", "p50 ms", "p90 ms", "p99 ms"],
                    [[name, f"{c[key]['median_ms']:.1f}", f"{c[key]['p90_ms']:.1f}", f"{c[key]['p99_ms']:.1f}"]
                     for name, key in (("no webhooks", "plain_ms"), ("3 events per run", "hooked_ms"))]))
        print(f"difference of medians {c['difference_ms']:+.1f} ms; noise floor (the halves of the no-webhook "
              f"samples) {c['noise_floor_ms']:.1f} ms")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--webhook-workers", choices=("same", "own", "none"), default="same",
                        help="send webhooks from the runs' worker (same), from a worker of their own (own: "
                             "`agentruns worker --webhooks-only`), or not at all (none: only the "
                             "events' cost in the runs' path is measured; the delivery phase is skipped)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    result = {"benchmark": "webhooks", "machine": machine_info(), "config": vars(args)}
    try:
        with Bench(BUDGET, "webhooks") as bench:
            s = setup(bench, args.webhook_workers)
            if args.webhook_workers != "none":
                print("delivery ...", flush=True)
                result["delivery"] = delivery(bench, s, args.events)
            print("cost ...", flush=True)
            result["cost"] = cost(bench, s, args.samples)
    finally:
        print_report(result)
        write_json(args.json_path, result)
    return result


if __name__ == "__main__":
    main()
