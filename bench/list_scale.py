"""The run list at a million runs (issue 16): GET /api/v1/agent-runs?limit=20 p50/p99 per filter.

Starts embedded PostgreSQL (fast mode) and Redis, migrated to head, seeds RUNS runs of TENANTS tenants
through the real schema with COPY (one tenant with BIG runs, one "typical" tenant with exactly 10,000,
the rest spread over the others), then VACUUM ANALYZE, starts `agentruns api` (gunicorn, gevent, 2
workers) and measures, through the API with each tenant's real Bearer key, the list's first page and
its filters (status, provider, computer_id, created_after, metadata[KEY]=VALUE common and rare, page
50 by cursor) on the big and the typical tenant, interleaved with GET /healthz as the same-run
baseline. Then it prints, for the SQL each case runs (captured from core.services.runs.list_runs
itself), EXPLAIN (ANALYZE, BUFFERS) as a custom and as a generic (prepared) plan, and an A/B of the
metadata filter's query shapes at the database.

    python -m bench.list_scale [--runs 1000000] [--tenants 100] [--big 200000] [--samples 300]
                               [--conns 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import bisect
import http.client
import json
import random
import re
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg.types.json import Jsonb

from bench._stack import (
    Bench,
    cpu_delta,
    cpu_snapshot,
    machine_info,
    other_top,
    pct,
    pg_dsn,
    start_api,
    start_services,
    table,
    write_json,
)

BUDGET = 600.0
TYPICAL = 10_000
DAYS = 30
TARGET_MS, GOAL_MS = 20.0, 5.0

PROVIDER_WEIGHTS = {"claude-code": 55, "codex": 25, "custom": 10, "claude": 5, "osa": 2, "pi": 2, "hermes": 1}
PHASES = {"ci": 40, "review": 25, "nightly": 15, "manual": 15, "deploy": 5}
REPOS = [f"acme/{name}" for name in ("api", "web", "infra", "mobile", "docs", "billing", "search", "auth", "data",
                                     "ml", "etl", "cli", "sdk", "ops", "site", "admin", "mail", "chat", "pay",
                                     "maps", "feed", "ads", "cdn", "dns", "edge", "logs", "metrics", "queue",
                                     "cache", "store", "media", "video", "audio", "img", "geo", "tax", "crm",
                                     "erp", "hr", "legal")]
CUSTOMERS_PER_TENANT = 200
PROMPTS = ["Fix the failing test in {repo}", "Review the open pull request on {repo} and summarise the risks",
           "Upgrade the dependencies of {repo} and make the build pass", "Write unit tests for the parser in {repo}",
           "Find why the nightly job of {repo} is slow and propose a fix", "Refactor the config loading in {repo}",
           "Add structured logging to the request handlers of {repo}", "Triage the last 20 issues of {repo}"]
OUTPUTS = ["Done. Changed {n} files; all tests pass.", "Opened a pull request with {n} commits.",
           "Could not reproduce the failure after {n} attempts.", "Summary: {n} findings, none blocking."]
RUN_COLUMNS = ("id", "tenant_id", "target_kind", "target_id", "provider", "prompt", "model", "command", "cwd",
               "timeout", "metadata", "env_enc", "status", "output", "stdout", "stderr", "stdout_truncated",
               "stderr_truncated", "exit_code", "error", "usage", "cost_usd", "session_id", "request_id", "epoch",
               "lease_until", "worker_id", "pgid", "cancel_requested_at", "enqueued_at", "started_at",
               "finished_at", "created_at", "updated_at")


def _zipf_weights(n: int) -> list[float]:
    return [1.0 / (k + 1) for k in range(n)]


def _cum(weights) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


# ------------------------------------------------------------------------------------------------
# seeding


def seed(settings, n_runs: int, n_tenants: int, big: int, rng: random.Random, log) -> dict:
    """Tenants (each with a real API key), devices, runs and their status events, through COPY."""
    from core import db
    from core.crypto import encrypt_json
    from core.services.keys import create_key

    if n_tenants < 3 or big + TYPICAL > n_runs:
        raise SystemExit("need at least 3 tenants and runs >= big + 10,000")
    t0 = time.monotonic()
    db.init(settings.database_url)
    tenants: list[dict[str, Any]] = []
    with db.session() as s:
        for i in range(n_tenants):
            tenant, raw, _ = create_key(s, f"list-scale-{i:03d}")
            tenants.append({"name": tenant.name, "id": tenant.id, "id_text": str(tenant.id), "key": raw})
    # Runs per tenant: BIG, 10,000, and the rest spread (0.5 to 1.5 times the mean) over the others.
    rest = n_runs - big - TYPICAL
    weights = [rng.uniform(0.5, 1.5) for _ in range(n_tenants - 2)]
    counts = [int(rest * w / sum(weights)) for w in weights]
    counts[0] += rest - sum(counts)
    counts = [big, TYPICAL, *counts]
    for t, c in zip(tenants, counts, strict=True):
        t["runs"] = c
        # A few devices per tenant (a dozen for the big one), used unevenly.
        t["devices"] = [f"builder-{k}" for k in range(12 if c == big else rng.randint(2, 6))]
        t["device_cum"] = _cum(_zipf_weights(len(t["devices"])))
    with psycopg.connect(pg_dsn(settings)) as conn:
        with conn.cursor() as cur, cur.copy(
                "COPY devices (tenant_id, id, kind, name, driver, host, port, username, trust_on_first_use, "
                "login_shell, labels, pool, max_concurrent_runs, default_cwd, providers) FROM STDIN") as cp:
            for t in tenants:
                for k, dev in enumerate(t["devices"]):
                    cp.write_row((t["id"], dev, "computer", dev, "ssh", f"10.0.{k}.{len(t['devices'])}", 22, "agent",
                                  False, True, Jsonb({"rack": f"r{k % 3}"}), "default", 8, "/home/agent/work",
                                  Jsonb({})))
    t_tenants = time.monotonic() - t0

    # created_at spread uniformly over DAYS, rows in time order (as they would have been inserted),
    # tenants interleaved at random in proportion to their counts. The rows are written as COPY text
    # lines built here (random columns drawn in bulk per chunk): write_row() and per-row random calls
    # cost about 100 us a row in Python, which made Python, not PostgreSQL, the bottleneck.
    now = datetime.now(UTC)
    now_us = int(now.timestamp() * 1e6)
    start_us = now_us - DAYS * 86_400_000_000
    span_us = now_us - start_us - 60_000_000
    owner = [i for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(owner)
    offsets = sorted(rng.randrange(span_us) for _ in range(n_runs))
    blob = encrypt_json(settings.secret_key, {})  # what create() stores for a run without env: None
    env_blob = None if blob is None else "\\\\x" + blob.hex()
    providers, p_cum = list(PROVIDER_WEIGHTS), _cum(PROVIDER_WEIGHTS.values())
    phases, ph_cum = list(PHASES), _cum(PHASES.values())
    repo_cum = _cum(_zipf_weights(len(REPOS)))
    cust_cum = _cum(_zipf_weights(CUSTOMERS_PER_TENANT))
    live_from = n_runs - max(50, n_runs // 2000)  # the newest 0.05 %: queued or running
    minutes: dict[int, str] = {}

    def ts(us: int) -> str:
        minute, rest = divmod(us, 60_000_000)
        prefix = minutes.get(minute)
        if prefix is None:
            prefix = minutes[minute] = time.strftime("%Y-%m-%d %H:%M:", time.gmtime(minute * 60))
        return f"{prefix}{rest // 1_000_000:02d}.{rest % 1_000_000:06d}+00"

    lease = ts(now_us + 60_000_000)
    errors = {"failed": '{"code": "exit_code", "message": "the command exited with 1"}',
              "canceled": '{"code": "canceled", "message": "canceled by the API"}'}
    exit_codes = {"succeeded": "0", "failed": "1", "canceled": "-15"}
    t_runs0 = time.monotonic()
    n_prov, n_ph = len(providers), len(phases)
    chunk = 50_000
    todo = list(range(0, n_runs, chunk))
    done = {"runs": 0, "events": 0}
    lock = threading.Lock()

    def copy_chunk(conn, lo: int) -> None:
        rng = random.Random(lo)
        hi = min(n_runs, lo + chunk)
        k = hi - lo
        provs = rng.choices(range(n_prov), cum_weights=p_cum, k=k)
        phs = rng.choices(range(n_ph), cum_weights=ph_cum, k=k)
        repos = rng.choices(REPOS, cum_weights=repo_cum, k=k)
        custs = rng.choices(range(CUSTOMERS_PER_TENANT), cum_weights=cust_cum, k=k)
        nfs = rng.choices(range(1, 31), k=k)
        rand = [rng.random() for _ in range(2 * k)]
        lines, ev_lines = [], []
        for j in range(k):
            i = lo + j
            ti = owner[i]
            t = tenants[ti]
            created_us = start_us + offsets[i]
            created = ts(created_us)
            provider = providers[provs[j]]
            repo = repos[j]
            meta = (f'{{"phase": "{phases[phs[j]]}", "customer": "cust-{ti:03d}-{custs[j]:03d}", '
                    f'"repo": "{repo}"}}')
            dc = t["device_cum"]
            device = t["devices"][bisect.bisect(dc, rand[2 * j] * dc[-1], hi=len(dc) - 1)]
            run_id = f"{rng.getrandbits(128):032x}"
            r = rand[2 * j + 1]
            if i >= live_from:
                status = "queued" if r < 0.5 else "running"
            else:
                status = "succeeded" if r < 0.88 else "failed" if r < 0.96 else "canceled"
            n = nfs[j]
            started_us = created_us + 20_000 + n * 60_000 if status != "queued" else None
            started = ts(started_us) if started_us else None
            terminal = status not in ("queued", "running")
            finished = ts(started_us + n * 40_000_000) if terminal and started_us else None
            out = OUTPUTS[n % len(OUTPUTS)].format(n=n) if terminal else None
            error = errors.get(status)
            cols = (
                run_id, t["id_text"], "computer", device, provider,
                PROMPTS[n % len(PROMPTS)].format(repo=repo) + f" (ticket {created_us % 99991})",
                None, "make test" if provider == "custom" else None, "/home/agent/work", "3600",
                meta, env_blob, status, out, (out + "\\n") * 3 if out else None, None, "f", "f",
                exit_codes.get(status), error,
                f'{{"input_tokens": {n * 1200}, "output_tokens": {n * 90}}}' if terminal else None,
                f"{n * 0.013:.3f}" if terminal else None, None, f"{created_us:x}",
                "0" if status == "queued" else "1", lease if status == "running" else None,
                "worker@bench" if status == "running" else None, str(40000 + i % 20000) if started else None,
                finished if status == "canceled" else None, ts(created_us + 3000), started, finished,
                created, finished or started or created)
            lines.append("\t".join("\\N" if c is None else str(c) for c in cols))
            # The status events a run of this status has: queued, running (once claimed), terminal.
            ev_lines.append(f'{run_id}\tstatus\t{{"status": "queued"}}\t{created}')
            if started:
                ev_lines.append(f'{run_id}\tstatus\t{{"status": "running"}}\t{started}')
            if finished:
                data = f'{{"status": "{status}", "error": {error}}}' if error else f'{{"status": "{status}"}}'
                ev_lines.append(f"{run_id}\tstatus\t{data}\t{finished}")
        with conn.cursor() as cur, cur.copy(f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN") as cp:
            cp.write("\n".join(lines) + "\n")
        with conn.cursor() as cur, cur.copy("COPY run_events (run_id, type, data, at) FROM STDIN") as cp:
            cp.write("\n".join(ev_lines) + "\n")
        conn.commit()
        with lock:
            done["runs"] += k
            done["events"] += len(ev_lines)
            if done["runs"] % 200_000 == 0 or done["runs"] == n_runs:
                log(f"  seeded {done['runs']:,} runs, {done['events']:,} events, "
                    f"{time.monotonic() - t_runs0:.1f} s")

    def writer(failed: list) -> None:
        try:
            with psycopg.connect(pg_dsn(settings)) as conn:
                # Per-row triggers off for the seed (superuser, this session only): the foreign keys
                # hold by construction and no tenant has a webhook endpoint, so the RI checks and the
                # outbox trigger would find and write nothing; every index is maintained as usual.
                conn.execute("SET session_replication_role = replica")
                while not failed:
                    with lock:
                        if not todo:
                            return
                        lo = todo.pop(0)
                    copy_chunk(conn, lo)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failed.append(exc)

    # Two writers: PostgreSQL's COPY with seven indexes on runs, not the Python that builds the lines,
    # is the bottleneck, and there are two cores.
    failed: list[BaseException] = []
    threads = [threading.Thread(target=writer, args=(failed,), daemon=True) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failed:
        raise failed[0]
    events = done["events"]
    t_copy = time.monotonic() - t_runs0
    t1 = time.monotonic()
    with psycopg.connect(pg_dsn(settings), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) runs")
        conn.execute("VACUUM (ANALYZE) run_events")
        conn.execute("ANALYZE")
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_table_size('runs')), pg_size_pretty(pg_indexes_size('runs')), "
            "pg_size_pretty(pg_total_relation_size('run_events')), pg_size_pretty(pg_database_size(current_database()))"
        ).fetchone() or ("?",) * 4
        index_sizes = conn.execute(
            "SELECT indexrelid::regclass::text, pg_size_pretty(pg_relation_size(indexrelid)) FROM pg_index "
            "WHERE indrelid = 'runs'::regclass ORDER BY 1").fetchall()
    t_vacuum = time.monotonic() - t1
    return {"tenants": tenants, "events": events, "now": now,
            "seconds": {"tenants_keys_devices": round(t_tenants, 1), "copy_runs_and_events": round(t_copy, 1),
                        "vacuum_analyze": round(t_vacuum, 1), "total": round(time.monotonic() - t0, 1)},
            "sizes": {"runs_heap": sizes[0], "runs_indexes": sizes[1], "run_events": sizes[2], "database": sizes[3],
                      "runs_index_each": dict(index_sizes)}}


# ------------------------------------------------------------------------------------------------
# the cases, the load, the plans


def cases_for(tenant: dict, index: int, now: datetime, label: str) -> list[dict]:
    """The list requests measured on one tenant (the query string and what list_runs gets)."""
    cust = f"cust-{index:03d}"
    after = (now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    specs = [("first page", {}), ("status=failed", {"status": "failed"}), ("provider=codex", {"provider": "codex"}),
             ("computer_id=builder-1", {"computer_id": "builder-1"}),
             ("created_after=7 days ago", {"created_after": after}),
             ("metadata[customer]= common (~5 %)", {"metadata[customer]": f"{cust}-002"}),
             ("metadata[customer]= rare (~0.1 %)", {"metadata[customer]": f"{cust}-150"}),
             ("page 50 by cursor", {})]
    out = []
    for name, params in specs:
        out.append({"case": name, "tenant": label, "tenant_runs": tenant["runs"], "key": tenant["key"],
                    "tenant_id": tenant["id"], "params": {"limit": "20", **params}})
    return out


def page_50_cursor(base: str, key: str) -> str:
    conn = _conn(base)
    cursor = None
    for _ in range(49):
        q = {"limit": "20", **({"cursor": cursor} if cursor else {})}
        status, body = _get(conn, f"/api/v1/agent-runs?{urlencode(q)}", key)
        cursor = json.loads(body)["next_cursor"]
    conn.close()
    if not cursor:
        raise RuntimeError("the tenant has fewer than 50 pages")
    return cursor


def _conn(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _get(conn: http.client.HTTPConnection, path: str, key: str | None) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def measure(bench: Bench, base: str, cases: list[dict], samples: int, conns: int, rng: random.Random) -> dict:
    """Every case `samples` times, shuffled together (noise hits all alike), over `conns` keep-alive
    connections (one thread each); returns latencies per case and the CPU used by process tree."""
    for c in cases:
        c["path"] = ("/healthz" if c["case"].startswith("GET /healthz")
                     else f"/api/v1/agent-runs?{urlencode(c['params'])}")
        c["lat"], c["errors"] = [], 0
    schedule = [c for c in cases for _ in range(samples)]
    rng.shuffle(schedule)
    warm = [c for c in cases for _ in range(10)]
    lock = threading.Lock()

    def client(jobs: list[dict], record: bool) -> None:
        conn = _conn(base)
        for c in jobs:
            t0 = time.perf_counter()
            try:
                status, body = _get(conn, c["path"], c.get("key"))
            except (OSError, http.client.HTTPException):
                status, body = 0, b""
                conn.close()
                conn = _conn(base)
            dt = time.perf_counter() - t0
            if record:
                with lock:
                    if status == 200:
                        c["lat"].append(dt)
                    else:
                        c["errors"] += 1
                        c.setdefault("error_sample", f"{status} {body[:200]!r}")
        conn.close()

    def run(jobs: list[dict], record: bool) -> None:
        threads = [threading.Thread(target=client, args=(jobs[k::conns], record)) for k in range(conns)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    run(warm, False)
    roots = {k: v for k, v in bench.pids.items() if k in ("api", "postgres", "redis")}
    cpu0, t0 = cpu_snapshot(roots), time.monotonic()
    run(schedule, True)
    cpu1, wall = cpu_snapshot(roots), time.monotonic() - t0
    return {"requests": len(schedule), "seconds": round(wall, 1),
            "cpu_ms_per_request": cpu_delta(cpu0, cpu1, per=len(schedule)),
            "other_top": other_top(cpu0, cpu1)}


class SqlCapture:
    """The statements core.services.runs.list_runs sends, captured from its engine."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.last: tuple[str, dict] | None = None
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.last = (statement, parameters)


def list_sql(capture: SqlCapture, case: dict) -> tuple[str, dict]:
    """The SQL (and parameters) the API runs for this case: list_runs itself, given what the API's
    schema loads from the same query string."""
    from app.api.schemas import RunListQuery
    from core import db
    from core.services import runs as run_service

    params = dict(case["params"])
    metadata = {k[len("metadata["):-1]: params.pop(k) for k in list(params) if k.startswith("metadata[")}
    capture.last = None
    with db.session() as s:
        run_service.list_runs(s, case["tenant_id"], RunListQuery().load(params), metadata)
    if capture.last is None:
        raise RuntimeError("bug: list_runs ran no statement")
    return capture.last


def explain(dsn: str, stmt: str, params: dict, generic: bool) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) as psycopg sends it (custom plan), or of the same statement
    PREPAREd with plan_cache_mode = force_generic_plan (what a statement psycopg prepared after 5
    executions may get from PostgreSQL after 5 more)."""
    with psycopg.connect(dsn) as conn:
        if not generic:
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt, params).fetchall()
            return "\n".join(r[0] for r in rows)
        names: list[str] = []

        def number(m: re.Match) -> str:
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE listq AS " + re.sub(r"%\((\w+)\)s", number, stmt))
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE listq({', '.join(['%s'] * len(names))})",
                        [_plain(params[n]) for n in names])
            return "\n".join(r[0] for r in cur.fetchall())


def _plain(v):
    return json.dumps(v.obj) if isinstance(v, Jsonb) else v


def plan_summary(plan: str) -> dict:
    ex = re.search(r"Execution Time: ([\d.]+)", plan)
    bufs = re.search(r"Buffers: (.*)", plan)
    return {"execution_ms": float(ex.group(1)) if ex else None, "buffers": bufs.group(1) if bufs else "",
            "indexes": sorted(set(re.findall(r"(?:Index|Index Only) Scan (?:Backward )?(?:using|on) (\w+)", plan))),
            "nodes": sorted(set(re.findall(r"(Seq Scan|Bitmap Heap Scan|Index Only Scan|Index Scan|Sort)", plan)))}


def old_metadata_sql(case: dict) -> tuple[str, dict]:
    """The list query before this benchmark's fix: one SELECT, the plain containment, ORDER BY, LIMIT."""
    from sqlalchemy import and_, select
    from sqlalchemy.dialects import postgresql

    from core.models import Run
    from core.services.runs import _SUMMARY

    (key, value), = ((k[len("metadata["):-1], v) for k, v in case["params"].items() if k.startswith("metadata["))
    stmt = (select(*_SUMMARY).where(and_(Run.tenant_id == case["tenant_id"], Run.metadata_.contains({key: value})))
            .order_by(Run.created_at.desc(), Run.id.desc()).limit(21))
    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    return str(compiled), {k: (Jsonb(v) if isinstance(v, dict) else v) for k, v in compiled.params.items()}


def time_sql(dsn: str, stmt: str, params: dict, repeat: int, prepared: bool) -> list[float]:
    """Milliseconds per execution at the database client (psycopg), `repeat` times; prepared: a
    server-side prepared statement forced to its generic plan."""
    out = []
    with psycopg.connect(dsn) as conn:
        if prepared:
            conn.execute("SET plan_cache_mode = force_generic_plan")
        for _ in range(repeat):
            t0 = time.perf_counter()
            conn.execute(stmt, params, prepare=prepared).fetchall()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _time_both(row: dict, shape: str, dsn: str, stmt: str, params: dict) -> None:
    """15 executions as a custom plan and 15 as a prepared generic plan: median and max ms into row."""
    for prepared in (False, True):
        ms = time_sql(dsn, stmt, params, 15, prepared)
        row[f"{shape}_{'generic' if prepared else 'custom'}_median_ms"] = round(statistics.median(ms), 2)
        row[f"{shape}_{'generic' if prepared else 'custom'}_max_ms"] = round(max(ms), 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--big", type=int, default=200_000, help="runs of the big tenant")
    parser.add_argument("--samples", type=int, default=300, help="requests per case")
    parser.add_argument("--conns", type=int, default=2, help="keep-alive client connections (one thread each)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)  # seed, print the DSN, wait
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    info = machine_info()
    t_all = time.monotonic()

    def log(msg: str) -> None:
        print(msg, flush=True)

    from core import db
    from tests.stack import service_env

    with Bench(BUDGET, "list") as bench:
        settings = start_services(bench)
        seeded = seed(settings, args.runs, args.tenants, args.big, rng, log)
        log(f"seeded in {seeded['seconds']} s; sizes {seeded['sizes']}")
        tenants = seeded["tenants"]
        dsn = pg_dsn(settings)
        if args.hold:
            log(f"DSN {dsn}")
            for t in tenants[:2]:
                log(f"tenant {t['name']} {t['id']} runs {t['runs']} key {t['key']}")
            while True:
                time.sleep(3600)
        base = start_api(bench, service_env(settings), workers=args.workers)
        cases: list[dict[str, Any]] = [
            {"case": "GET /healthz (baseline)", "tenant": "", "tenant_runs": None, "params": {}}]
        for index, label in ((0, "big"), (1, "typical")):
            cases += cases_for(tenants[index], index, seeded["now"], label)
        for c in cases:
            if c["case"] == "page 50 by cursor":
                c["params"]["cursor"] = page_50_cursor(base, c["key"])
        bench.check("measuring")
        log(f"measuring {len(cases)} cases x {args.samples} samples over {args.conns} connections ...")
        load = measure(bench, base, cases, args.samples, args.conns, rng)
        base_p50 = statistics.median(cases[0]["lat"]) * 1000
        for c in cases:
            ms = [x * 1000 for x in c["lat"]]
            c["n"] = len(ms)
            c["p50_ms"] = round(statistics.median(ms), 2) if ms else None
            c["p99_ms"] = round(pct(ms, 99), 2) if ms else None
            c["p50_vs_baseline"] = round(c["p50_ms"] / base_p50, 1) if ms else None
            c["verdict"] = ("" if not c["tenant"] else "FAIL" if not ms or c["errors"] or c["p99_ms"] >= TARGET_MS
                            else "PASS (goal met)" if c["p99_ms"] < GOAL_MS else "PASS")
        bench.check("plans")
        log("EXPLAIN (ANALYZE, BUFFERS) of each case's SQL ...")
        capture = SqlCapture(db.init(settings.database_url))
        for c in cases[1:]:
            stmt, params = list_sql(capture, c)
            c["sql"] = stmt
            c["sql_params"] = {k: _plain(v) if isinstance(v, Jsonb) else str(v) for k, v in params.items()}
            c["plan_custom"] = explain(dsn, stmt, params, generic=False)
            c["plan_generic"] = explain(dsn, stmt, params, generic=True)
            c["db_custom"], c["db_generic"] = plan_summary(c["plan_custom"]), plan_summary(c["plan_generic"])
        # The metadata filter before and after the fix, at the database. "Before" had the GIN index on
        # metadata alone, which migration 0009 dropped: it is built again for the "before" half of the
        # comparison and dropped before the "after" half.
        ab: list[dict[str, Any]] = []
        metadata_cases = [c for c in cases[1:] if c["case"].startswith("metadata")]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE INDEX ix_runs_metadata ON runs USING gin (metadata jsonb_path_ops)")
            conn.execute("ANALYZE runs")
        try:
            for c in metadata_cases:
                bench.check("metadata A/B, before")
                old_stmt, old_params = old_metadata_sql(c)
                row = {"case": c["case"], "tenant": c["tenant"],
                       "before_plan_custom": explain(dsn, old_stmt, old_params, generic=False),
                       "before_plan_generic": explain(dsn, old_stmt, old_params, generic=True)}
                _time_both(row, "before", dsn, old_stmt, old_params)
                ab.append(row)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP INDEX IF EXISTS ix_runs_metadata")
                conn.execute("ANALYZE runs")
        for c, row in zip(metadata_cases, ab, strict=True):
            bench.check("metadata A/B, after")
            new_stmt, new_params = list_sql(capture, c)
            _time_both(row, "after", dsn, new_stmt, new_params)
        with psycopg.connect(dsn) as conn:
            count = conn.execute("SELECT count(*) FROM runs").fetchone()
            runs_in_table = count[0] if count else None
    for c in cases:
        c.pop("lat", None)
        c.pop("key", None)
        c["tenant_id"] = str(c.get("tenant_id", ""))
    result = {"benchmark": "list_scale", "machine": info,
              "command": "python -m bench.list_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
              "config": {"runs": args.runs, "runs_in_table": runs_in_table, "tenants": args.tenants, "big": args.big,
                         "typical": TYPICAL, "samples": args.samples, "conns": args.conns,
                         "gunicorn_workers": args.workers,
                         "seed": args.seed},
              "seed": {k: v for k, v in seeded.items() if k in ("seconds", "sizes", "events")},
              "load": load, "cases": cases, "metadata_ab": ab, "total_seconds": round(time.monotonic() - t_all, 1)}
    print_report(result)
    write_json(args.json_path, result)
    return result


def print_report(result: dict) -> None:
    c, sd = result["config"], result["seed"]
    print(f"\nList at scale ({result['machine']['date_utc']}, {result['machine']['cpus']} CPUs, "
          f"{c['runs_in_table']:,} runs "
          f"of {c['tenants']} tenants: big {c['big']:,}, typical {c['typical']:,}; {sd['events']:,} status events)")
    print(f"Seeding: {sd['seconds']} s; sizes {sd['sizes']}")
    print(f"Load: {result['load']['requests']} requests in {result['load']['seconds']} s over {c['conns']} keep-alive "
          f"connections, cases interleaved at random; gunicorn {c['gunicorn_workers']} gevent workers")
    print(table(["case", "tenant (runs)", "n", "p50 ms", "p99 ms", "p50 x healthz", f"target p99 < {TARGET_MS:g} ms",
                 "DB custom ms", "DB generic ms", "plan (custom)"],
                [[r["case"], f"{r['tenant']} ({r['tenant_runs']:,})" if r["tenant"] else "", r["n"], r["p50_ms"],
                  r["p99_ms"], r["p50_vs_baseline"], r["verdict"] + (f" ({r['errors']} errors)" if r["errors"] else ""),
                  r.get("db_custom", {}).get("execution_ms"), r.get("db_generic", {}).get("execution_ms"),
                  ", ".join(r.get("db_custom", {}).get("indexes", [])
                            + [n for n in r.get("db_custom", {}).get("nodes", []) if n in ("Seq Scan", "Sort")])]
                 for r in result["cases"]]))
    cpu = result["load"]["cpu_ms_per_request"]
    print(f"CPU per request (all cases), ms: gunicorn {cpu.get('api_ms_per')}, postgres {cpu.get('postgres_ms_per')}, "
          f"client {cpu.get('client_ms_per')}, other {cpu.get('other_ms_per')}; "
          f"busiest others: {result['load']['other_top']}")
    print("\nThe metadata filter at the database, before (one SELECT, plain containment, the GIN index on metadata "
          "alone built again for it) and after "
          "(newest-rows window, "
          "then ix_runs_tenant_metadata), 15 executions each, ms (median / max):")
    print(table(["case", "tenant", "before custom", "before generic", "after custom", "after generic"],
                [[r["case"], r["tenant"], *(f"{r[f'{s}_median_ms']} / {r[f'{s}_max_ms']}" for s in
                                            ("before_custom", "before_generic", "after_custom", "after_generic"))]
                 for r in result["metadata_ab"]]))
    for r in result["metadata_ab"]:
        print(f"\n### before: {r['case']}, {r['tenant']} tenant, custom plan\n{r['before_plan_custom']}")
        print(f"\n### before: {r['case']}, {r['tenant']} tenant, generic plan\n{r['before_plan_generic']}")
    for r in result["cases"][1:]:
        print(f"\n### {r['case']}, {r['tenant']} tenant: SQL\n{r['sql']}\n-- {r['sql_params']}")
        print(f"\n### {r['case']}, {r['tenant']} tenant: custom plan\n{r['plan_custom']}")
        print(f"\n### {r['case']}, {r['tenant']} tenant: generic plan\n{r['plan_generic']}")
    print(f"\nWhole benchmark: {result['total_seconds']} s")


if __name__ == "__main__":
    main()
