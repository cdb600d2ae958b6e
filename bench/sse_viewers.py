"""Live-output viewers: how many concurrent Server-Sent Events streams one small API holds (issue 4).

Starts embedded PostgreSQL and Redis, `agentruns api` (gunicorn, 2 gevent workers), one worker and a
`local` device. A run prints `tick-1`..`tick-10` one second apart; VIEWERS clients (threads with
plain http.client connections) follow `GET /api/v1/agent-runs/{id}/events` with
`Accept: text/event-stream` from the start. Reported, next to a single viewer measured first in the
same run: how many viewers connected and got every tick and the terminal status, the delivery delay
(client receive time minus the event's `at` stamp, same clock), the gunicorn tree's RSS with the
viewers connected, and GET /healthz latency while they are. The run starts before the viewers
connect, and each viewer reads nothing until all are connected: the delays of the ticks printed
during that ramp measure the ramp, so "live" delays count only the ticks stamped after it.

    python -m bench.sse_viewers [--viewers 500] [--json out.json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from datetime import datetime
from urllib.parse import urlsplit

from bench._stack import (
    Api,
    Bench,
    machine_info,
    make_api_key,
    start_api,
    start_services,
    summary_ms,
    table,
    write_json,
)

TICKS = 10
COMMAND = f"for i in $(seq 1 {TICKS}); do echo tick-$i; sleep 1; done"


def _tree_rss_mb(root: int) -> float:
    """Sum of VmRSS over a process and its descendants."""
    import os

    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
        todo.extend(children.get(pid, []))
    return total / 1024


class Viewer(threading.Thread):
    """One SSE client: records when each tick arrived and whether the stream ended properly."""

    def __init__(self, url: str, key: str, run_id: str, started: threading.Barrier | None):
        super().__init__(daemon=True)
        self.url, self.key, self.run_id, self.barrier = urlsplit(url), key, run_id, started
        self.connected = False
        self.delays: list[tuple[float, float]] = []  # (the event's `at`, its delay)
        self.ticks = 0
        self.finished = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            host = self.url.hostname
            if host is None:  # start_api always returns http://127.0.0.1:PORT
                raise ValueError(f"bug: API URL {self.url.geturl()!r} has no host")
            conn = http.client.HTTPConnection(host, self.url.port, timeout=60)
            conn.request("GET", f"/api/v1/agent-runs/{self.run_id}/events",
                         headers={"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"})
            resp = conn.getresponse()
            self.connected = resp.status == 200
            if self.barrier is not None:
                self.barrier.wait(timeout=60)
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event["type"] == "stdout" and "tick-" in event["data"]:
                    at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
                    self.delays.append((at, time.time() - at))
                    self.ticks += event["data"].count("tick-")
                elif event["type"] == "status" and event["data"]["status"] in ("succeeded", "failed", "canceled"):
                    self.finished = event["data"]["status"] == "succeeded"
            conn.close()
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self.error = repr(exc)[:200]
            if self.barrier is not None:
                self.barrier.abort()


def follow(url: str, key: str, api: Api, viewers: int, api_pid: int) -> dict:
    """Start one run, attach `viewers` clients, measure; returns the figures."""
    run = api.create_run({"prompt": "tick", "sandbox_id": "sse-local", "provider": "custom", "command": COMMAND})
    barrier = threading.Barrier(viewers + 1)
    clients = [Viewer(url, key, run["id"], barrier) for _ in range(viewers)]
    for c in clients:
        c.start()
    barrier.wait(timeout=60)  # every viewer has its 200 and is reading
    live_from = time.time()
    time.sleep(1.5)
    rss = _tree_rss_mb(api_pid)
    health = []
    for _ in range(20):
        t = time.monotonic()
        api.http.get("/healthz").raise_for_status()
        health.append(time.monotonic() - t)
        time.sleep(0.05)
    for c in clients:
        c.join(TICKS + 30)
    delays = [d for c in clients for _, d in c.delays]
    live = [d for c in clients for at, d in c.delays if at >= live_from]
    return {
        "viewers": viewers,
        "connected": sum(c.connected for c in clients),
        "complete": sum(c.ticks == TICKS and c.finished for c in clients),
        "errors": [c.error for c in clients if c.error][:5],
        "delivery": summary_ms(delays),
        "delivery_live": summary_ms(live),
        "api_rss_mb": round(rss, 1),
        "healthz_while_streaming": summary_ms(health),
    }


def print_report(results: dict) -> None:
    """The table of one result document."""
    rows = [[f"{r['viewers']} viewer(s)", f"{r['connected']} / {r['complete']}", r["delivery"].get("median_ms"),
             r["delivery"].get("p99_ms"), r["delivery_live"].get("median_ms"), r["delivery_live"].get("p99_ms"),
             r["delivery_live"]["n"], r["api_rss_mb"], r["healthz_while_streaming"]["median_ms"],
             len(r["errors"])] for r in (results["single"], results["many"])]
    print(f"gunicorn (2 gevent workers) RSS idle: {results['idle_api_rss_mb']:.1f} MB")
    print(table(["case", "connected / got all ticks + end", "delivery p50 ms", "delivery p99 ms",
                 "live p50 ms", "live p99 ms", "live ticks", "API RSS MB", "healthz p50 ms meanwhile", "errors"],
                rows))
    if results["many"]["errors"]:
        print("errors:", results["many"]["errors"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tests.stack import service_env, start_worker

    with Bench(240, "sse") as bench:
        settings = start_services(bench)
        key = make_api_key(settings)
        env = service_env(settings)
        url = start_api(bench, env, workers=2)
        worker = start_worker(env, concurrency=8)
        bench.on_exit(worker.stop)
        api = Api(url, key)
        bench.on_exit(api.close)
        if bench.tmp is None:
            raise RuntimeError("bug: Bench.tmp is set on entering the Bench context")
        workdir = bench.tmp / "work"
        workdir.mkdir()
        api.create_device({"id": "sse-local", "kind": "sandbox", "driver": "local", "default_cwd": str(workdir)})
        idle_rss = _tree_rss_mb(bench.pids["api"])
        one = follow(url, key, api, 1, bench.pids["api"])
        many = follow(url, key, api, args.viewers, bench.pids["api"])
    results = {"machine": machine_info(), "idle_api_rss_mb": round(idle_rss, 1), "single": one, "many": many}
    print_report(results)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
