"""The worker's Prometheus endpoint (`agentruns worker --metrics-port`), scraped from a real worker
process while runs go through it."""
from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_run
from tests.test_e2e_runs import create, wait_status

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[tuple, float]:
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def metered(settings, e2e_env):
    """An API client and a worker of their own on Redis database 14, which no other worker reads:
    the worker's counters move only with this module's runs."""
    from dataclasses import replace

    from app import create_app
    from tests.sshd import free_port
    from tests.stack import start_worker

    redis_url = f"{settings.redis_url.rpartition('/')[0]}/14"
    app = create_app(replace(settings, redis_url=redis_url))
    port = free_port()
    proc = start_worker({**e2e_env, "REDIS_URL": redis_url}, concurrency=8, name="metered", metrics_port=port)
    yield app, f"http://127.0.0.1:{port}/metrics"
    proc.stop()


def scrape_until(url: str, done, seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def deliveries(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "agentruns_deliveries_total")


def test_worker_metrics_count_runs_and_deliveries(metered, auth, local_device):
    app, url = metered
    client = app.test_client()
    before = scrape(url)
    ok = create(client, auth, prompt="p", sandbox_id="box-1", command="echo hi")
    bad = create(client, auth, prompt="p", sandbox_id="box-1", command="exit 3")
    assert wait_run(client, auth, ok["id"])["status"] == "succeeded"
    assert wait_run(client, auth, bad["id"])["error"]["code"] == "nonzero_exit"
    # A delivery is counted when its task returns, just after its runs were recorded. The duplicate
    # goes once both have returned: sent earlier, it could find the device's slot still held (busy).
    scrape_until(url, lambda s: deliveries(s) - deliveries(before) >= 2)
    app.extensions["celery"].send_task("runs.execute", args=[ok["id"]])  # a duplicate of a finished run
    after = scrape_until(url, lambda s: deliveries(s) - deliveries(before) >= 3)

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("agentruns_runs_finished_total", status="succeeded", error_code="") == 1
    assert delta("agentruns_runs_finished_total", status="failed", error_code="nonzero_exit") == 1
    assert delta("agentruns_run_duration_seconds_count", status="succeeded") == 1
    assert delta("agentruns_run_duration_seconds_count", status="failed") == 1
    # Three messages: the two runs' (one may find its run served by the other's delivery, or the
    # device busy) and the duplicate, which finds nothing queued.
    assert deliveries(after) - deliveries(before) == 3
    assert delta("agentruns_deliveries_total", outcome="executed") >= 1
    assert delta("agentruns_deliveries_total", outcome="nothing_queued") >= 1


def test_worker_metrics_show_a_running_run(metered, auth, local_device):
    app, url = metered
    client = app.test_client()
    run = create(client, auth, prompt="p", sandbox_id="box-1", command="sleep 30")
    wait_status(client, auth, run["id"], "running")
    samples = scrape(url)
    assert value(samples, "agentruns_runs_in_flight") == 1
    assert value(samples, "agentruns_runs", status="running") >= 1
    assert client.post(f"/api/v1/agent-runs/{run['id']}/cancel", headers=auth).status_code == 200
    assert wait_run(client, auth, run["id"])["status"] == "canceled"
