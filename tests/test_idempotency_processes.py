"""50 identical requests with one Idempotency-Key across two API server processes: exactly one run."""
from __future__ import annotations

import threading
import uuid

import httpx
import pytest

from tests.conftest import make_key

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_apis(e2e_env, app):
    from tests.sshd import free_port
    from tests.stack import start_api

    ports = [free_port(), free_port()]
    procs = [start_api(e2e_env, port, workers=2, name=f"api{i}") for i, port in enumerate(ports)]
    yield [f"http://127.0.0.1:{port}" for port in ports]
    for p in procs:
        p.stop()


def test_fifty_concurrent_duplicates_make_one_run(two_apis):
    key = make_key()[1]
    headers = {"Authorization": f"Bearer {key}"}
    httpx.post(f"{two_apis[0]}/api/v1/devices", headers=headers,
               json={"id": "dup-box", "kind": "sandbox", "driver": "local"}).raise_for_status()
    idem = f"burst-{uuid.uuid4()}"
    body = {"prompt": "only once", "sandbox_id": "dup-box", "provider": "custom", "command": "true"}
    barrier = threading.Barrier(50)
    results: list[tuple[int, str, str | None]] = []
    lock = threading.Lock()

    def fire(i: int) -> None:
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            r = c.post(f"{two_apis[i % 2]}/api/v1/agent-runs", json=body,
                       headers={**headers, "Idempotency-Key": idem})
        with lock:
            results.append((r.status_code, r.json()["data"]["id"], r.headers.get("Idempotent-Replayed")))

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 50
    assert len({rid for _, rid, _ in results}) == 1
    assert sorted(code for code, _, _ in results) == [200] * 49 + [201]
    assert sum(1 for _, _, replayed in results if replayed == "true") == 49
    listed = httpx.get(f"{two_apis[1]}/api/v1/agent-runs?limit=100", headers=headers).json()["data"]
    assert [r["id"] for r in listed] == [results[0][1]]
