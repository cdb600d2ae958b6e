"""The API under trouble: a dependency that is down is a 503 with Retry-After in the one error body,
and inputs that once escaped as a 500 are 4xx answers (found by an outside probe, issue #11)."""
from __future__ import annotations

import base64
import io
from dataclasses import replace

from tests.sshd import free_port
from tests.test_api_fuzz_regressions import assert_error


def test_a_database_that_is_down_is_a_503_with_retry_after(settings, auth):
    from app import create_app
    from core import db

    try:  # the engine is per process: the app below replaces it, so put the real one back after
        down = create_app(replace(settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"))
        client = down.test_client()
        for resp in (client.get("/api/v1/agent-runs", headers=auth),
                     client.post("/api/v1/agent-runs", json={"prompt": "x", "sandbox_id": "box-1"}, headers=auth)):
            body = assert_error(resp, 503, "unavailable")
            assert "database" in body["error"]["message"]
            assert int(resp.headers["Retry-After"]) >= 1
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["checks"]["postgres"].startswith("error")
    finally:
        db.init(settings.database_url)


def test_a_cursor_nested_beyond_the_recursion_limit_is_a_422(client, auth):
    cursor = base64.urlsafe_b64encode(b"[" * 1100).decode().rstrip("=")
    resp = client.get(f"/api/v1/agent-runs?cursor={cursor}", headers=auth)
    assert_error(resp, 422, "validation_error", "cursor")


def test_a_metadata_filter_nested_beyond_the_recursion_limit_matches_the_string(client, auth, local_device):
    resp = client.get("/api/v1/agent-runs", query_string={"metadata[k]": "[" * 1100}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["data"] == []


def test_a_chunked_body_over_the_limit_is_a_413(client, auth, settings):
    big = b'{"prompt": "' + b"x" * (settings.max_body_bytes + 10) + b'", "sandbox_id": "box-1"}'
    # What gunicorn hands the app for a chunked request: no Content-Length, a stream that ends.
    resp = client.post("/api/v1/agent-runs", input_stream=io.BytesIO(big), headers={
        **auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})
    assert_error(resp, 413, "payload_too_large")


def test_gunicorn_answers_a_chunked_body_over_the_limit_with_413(live_server, auth, settings):
    import httpx

    def chunks():
        yield b'{"prompt": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'", "sandbox_id": "box-1"}'

    resp = httpx.post(f"{live_server}/api/v1/agent-runs", content=chunks(), timeout=30,
                      headers={**auth, "Content-Type": "application/json"})
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "payload_too_large"
