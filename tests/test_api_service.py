"""Service endpoints: health, readiness, the OpenAPI document and its docs page, the run page's entry."""
from __future__ import annotations

import re
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


def test_docs_page_loads_the_vendored_swagger_ui_and_nothing_from_elsewhere(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in sources
    assert "/static/vendor/swagger-ui/swagger-ui.css" in sources
    assert all(s.startswith("/") and not s.startswith("//") for s in sources if s != "data:,"), sources
    assert "<script>" not in html  # no inline script, so the page runs under a CSP of 'self' scripts
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    # Swagger UI would otherwise ask validator.swagger.io about the spec.
    assert '"validatorUrl": null' in html
    for asset in sources:
        if asset.startswith("/static/"):
            resp = client.get(asset)
            assert resp.status_code == 200 and resp.data, asset
            resp.close()


def test_run_page_asks_to_sign_in_and_keeps_the_key_link_working(client):
    """/runs/{id} is the console's run page now: without a session it sends the browser to sign in and
    back; a link carrying the key in its fragment (#key=..., kept across the redirect) signs in at once."""
    run_id = "0b7c5a3e-0000-4000-8000-000000000001"
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 302 and page.headers["Location"] == f"/sign-in?next=/runs/{run_id}"
    sign_in = client.get(page.headers["Location"]).get_data(as_text=True)
    assert f'name="next" value="/runs/{run_id}"' in sign_in and "/static/console/sign_in.js" in sign_in
    script = client.get("/static/console/sign_in.js")
    assert 'get("key")' in script.get_data(as_text=True)
    script.close()
    # The id is escaped, never injected as markup.
    hostile = client.get("/sign-in?next=/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in hostile
