"""Service endpoints: health, readiness, the OpenAPI document."""
from __future__ import annotations

from dataclasses import replace


def test_health_and_readiness(client, settings):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_readiness_reports_a_dead_redis(settings):
    from app import create_app
    from tests.sshd import free_port

    broken = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")).test_client()
    resp = broken.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["postgres"] == "ok" and resp.get_json()["checks"]["redis"].startswith("error")


def test_openapi_document_lists_the_contract(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/v1/agent-runs", "/api/v1/agent-runs/{run_id}", "/api/v1/agent-runs/{run_id}/cancel",
                 "/api/v1/agent-runs/{run_id}/events", "/api/v1/devices", "/api/v1/devices/{device_id}"):
        assert path in paths, path
    create = paths["/api/v1/agent-runs"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert "prompt" in str(spec["components"]["schemas"]) and body
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert client.get("/api/v1/docs").status_code == 200


def test_run_view_page_reads_the_api_with_the_viewers_key(client):
    page = client.get("/runs/0b7c5a3e-0000-4000-8000-000000000001")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '"0b7c5a3e-0000-4000-8000-000000000001"' in html  # JSON-encoded into the script
    assert "text/event-stream" in html and "Last-Event-ID" in html and "sessionStorage" in html
    # The id is escaped, never injected as markup.
    hostile = client.get("/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in hostile
