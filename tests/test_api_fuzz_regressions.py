"""Bad caller input that once answered 500 (found by fuzzing the API): now a 4xx in the one error format."""
from __future__ import annotations

import json

import pytest

BIGINT_MAX = 2**63 - 1
SURROGATE = "\ud800"  # a lone surrogate: valid as a JSON escape, not encodable as UTF-8


def send(client, method, path, auth, body):
    """JSON with every non-ASCII character escaped, as a client would send a lone surrogate."""
    return client.open(path, method=method, data=json.dumps(body), content_type="application/json", headers=auth)


def assert_error(resp, status: int, code: str, field: str | None = None) -> dict:
    body = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"error", "request_id"} and body["error"]["code"] == code, body
    if field is not None:  # the field itself, or a part of it ("labels.k.value")
        assert any(name == field or name.startswith(field + ".") for name in body["error"]["details"]["fields"]), body
    return body


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
    b'{"prompt": "x", "sandbox_id": "box-1", "timeout": ' + b"9" * 5000 + b"}",  # over int's 4300 digits
])
def test_a_body_python_cannot_load_is_invalid_json(client, auth, local_device, raw):
    resp = client.post("/api/v1/agent-runs", data=raw, content_type="application/json", headers=auth)
    assert_error(resp, 400, "invalid_json")


@pytest.mark.parametrize("body, field", [
    ({"target_id": "box\u0000"}, "target_id"),
    ({"computer_id": "box\u0000"}, "computer_id"),
    ({"sandbox_id": "box-1", "provider": "custom", "runtime_command": "echo \u0000"}, "runtime_command"),
    ({"sandbox_id": "box-1", "prompt": "a" + SURROGATE}, "prompt"),
    ({"target_id": SURROGATE}, "target_id"),
    ({"sandbox_id": "box-1", "provider": "custom", "command": SURROGATE}, "command"),
    ({"sandbox_id": "box-1", "cwd": "/" + SURROGATE}, "cwd"),
    ({"sandbox_id": "box-1", "metadata": {SURROGATE: "v"}}, "metadata"),
    ({"sandbox_id": "box-1", "metadata": {"k": ["ok", {"deep": SURROGATE}]}}, "metadata"),
    ({"sandbox_id": "box-1", "env": {"TOKEN": SURROGATE}}, "env"),
    # Python's json reads NaN and Infinity, which jsonb (like JSON) has no way to hold.
    ({"sandbox_id": "box-1", "metadata": {"k": float("nan")}}, "metadata"),
    ({"sandbox_id": "box-1", "metadata": {"k": [{"deep": float("-inf")}]}}, "metadata"),
])
def test_run_values_postgres_or_a_device_cannot_take(client, auth, local_device, body, field):
    resp = send(client, "POST", "/api/v1/agent-runs", auth, {"prompt": "x", **body})
    assert_error(resp, 422, "validation_error", field)


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_metadata_nesting_is_bounded(client, auth, local_device):
    # Under gunicorn, 950 levels parsed, then overflowed the recursion limit in psycopg's JSON dump
    # (500); how deep a value overflows depends on the stack, so the bound is far below it.
    for levels in (33, 200):
        resp = send(client, "POST", "/api/v1/agent-runs", auth,
                    {"prompt": "x", "sandbox_id": "box-1", "metadata": {"k": nested(levels)}})
        assert_error(resp, 422, "validation_error", "metadata")
    resp = send(client, "POST", "/api/v1/agent-runs", auth,
                {"prompt": "x", "sandbox_id": "box-1", "metadata": {"k": nested(32)}})
    assert resp.status_code == 201, resp.get_json()


SSH = {"kind": "computer", "driver": "ssh", "host": "127.0.0.1", "username": "u", "password": "p",
       "trust_on_first_use": True}


@pytest.mark.parametrize("body, field", [
    ({"name": "a\u0000"}, "name"),
    ({"host": "h\u0000"}, "host"),
    ({"host_key": "ssh-ed25519 AAAA\u0000"}, "host_key"),
    ({"labels": {"k\u0000": "v"}}, "labels"),
    ({"labels": {"k": "v\u0000"}}, "labels"),
    ({"providers": {"custom": {"executable": "x\u0000"}}}, "providers"),
    ({"providers": {"custom": {"extra_args": ["\u0000"]}}}, "providers"),
    ({"name": SURROGATE}, "name"),
    ({"host": SURROGATE}, "host"),
    ({"labels": {SURROGATE: "v"}}, "labels"),
    ({"default_cwd": "/" + SURROGATE}, "default_cwd"),
    ({"private_key": SURROGATE}, "private_key"),  # was stored, then POST .../test answered 500
    ({"password": SURROGATE}, "password"),
    ({"env": {"TOKEN": SURROGATE}}, "env"),
])
def test_device_values_postgres_or_a_driver_cannot_take(client, auth, body, field):
    assert_error(send(client, "POST", "/api/v1/devices", auth, {**SSH, "id": "dev-1", **body}),
                 422, "validation_error", field)
    assert client.get("/api/v1/devices/dev-1", headers=auth).status_code == 404
    assert send(client, "POST", "/api/v1/devices", auth, {**SSH, "id": "dev-1"}).status_code == 201
    assert_error(send(client, "PATCH", "/api/v1/devices/dev-1", auth, body), 422, "validation_error", field)


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_a_device_id_with_nul_is_not_found(client, auth, method):
    resp = send(client, method, "/api/v1/devices/a%00b", auth, {"name": "x"} if method == "PATCH" else None)
    assert_error(resp, 404, "not_found")
    assert_error(client.post("/api/v1/devices/a%00b/test", headers=auth), 404, "not_found")


@pytest.mark.parametrize("query, field", [
    ("target_id=%00", "target_id"),
    ("sandbox_id=box%00", "sandbox_id"),
    ("computer_id=%00", "computer_id"),
    ("metadata[k]=v%00", "metadata[k]"),
    ("metadata[k%00]=v", "metadata[k\u0000]"),
])
def test_list_filters_postgres_cannot_take(client, auth, query, field):
    assert_error(client.get(f"/api/v1/agent-runs?{query}", headers=auth), 422, "validation_error", field)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_metadata_filter_values_json_cannot_hold_as_numbers_match_as_strings(client, auth, local_device, value):
    run = send(client, "POST", "/api/v1/agent-runs", auth,
               {"prompt": "x", "sandbox_id": "box-1", "metadata": {"k": value}}).get_json()["data"]
    resp = client.get(f"/api/v1/agent-runs?metadata[k]={value}", headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert [r["id"] for r in resp.get_json()["data"]] == [run["id"]]


def test_an_event_cursor_beyond_bigint_is_rejected(quiet_client, auth, local_device):
    run = send(quiet_client, "POST", "/api/v1/agent-runs", auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()
    path = f"/api/v1/agent-runs/{run['data']['id']}/events"
    assert quiet_client.get(f"{path}?after_seq={BIGINT_MAX}", headers=auth).get_json()["data"] == []
    assert_error(quiet_client.get(f"{path}?after_seq={BIGINT_MAX + 1}", headers=auth), 422, "validation_error",
                 "after_seq")


@pytest.mark.parametrize("last_event_id", ["\u00b2", "9" * 5000, str(BIGINT_MAX + 1), "-1", "garbage"])
def test_a_last_event_id_that_is_no_seq_replays_from_after_seq(quiet_client, auth, local_device, last_event_id):
    run = send(quiet_client, "POST", "/api/v1/agent-runs", auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()
    path = f"/api/v1/agent-runs/{run['data']['id']}"
    assert quiet_client.post(f"{path}/cancel", headers=auth).status_code == 200
    resp = quiet_client.get(f"{path}/events", headers={**auth, "Accept": "text/event-stream",
                                                        "Last-Event-ID": last_event_id})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    statuses = [json.loads(line[len("data: "):])["data"]["status"]
                for line in resp.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert statuses == ["queued", "canceled"]


@pytest.mark.parametrize("path, body, field", [
    # Python's `$` also matches before a final newline; the id went into the Location header (500).
    ("/api/v1/devices", {"id": "abc\n", "kind": "sandbox", "driver": "local"}, "id"),
    ("/api/v1/devices", {**SSH, "username": "u\n"}, "username"),
    ("/api/v1/agent-runs", {"prompt": "x", "sandbox_id": "box-1", "model": "m\n"}, "model"),
    ("/api/v1/agent-runs", {"prompt": "x", "sandbox_id": "box-1", "env": {"NAME\n": "v"}}, "env"),
])
def test_a_trailing_newline_does_not_pass_a_pattern(client, auth, local_device, path, body, field):
    assert_error(send(client, "POST", path, auth, body), 422, "validation_error", field)


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example.com", "."])
def test_a_host_name_no_resolver_can_take_is_rejected(client, auth, host):
    # Accepted before, and then POST /devices/{id}/test answered 500 (the idna codec's UnicodeError).
    assert_error(send(client, "POST", "/api/v1/devices", auth, {**SSH, "id": "dev-h", "host": host}),
                 422, "validation_error", "host")
    # (Addresses on loopback: the tests' allow-list, AGENTRUNS_DEVICE_NETWORKS, holds only that.)
    for ok in ("box.example.com", "\u00e9t\u00e9.example", "127.0.0.5", "::1"):
        resp = send(client, "POST", "/api/v1/devices", auth, {**SSH, "id": "dev-h", "host": ok})
        assert resp.status_code == 201, resp.get_json()
        assert client.delete("/api/v1/devices/dev-h", headers=auth).status_code == 204


def _schema(spec: dict, ref_or_schema: dict) -> dict:
    while "$ref" in ref_or_schema:
        kind, name = ref_or_schema["$ref"].split("/")[-2:]
        ref_or_schema = spec["components"][kind][name]
    return ref_or_schema


def test_openapi_documents_the_error_body_and_nullable_fields(client, auth, local_device):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status == "default" or status.startswith("4"):
                    body = _schema(spec, _schema(spec, response)["content"]["application/json"]["schema"])
                    assert set(body["properties"]) == {"error", "request_id"}, (method, path, status)
                    error = _schema(spec, body["properties"]["error"])
                    assert {"code", "message", "details"} <= set(error["properties"])

    def nulls_are_documented(schema_name: str, data: dict) -> None:
        props = spec["components"]["schemas"][schema_name]["properties"]
        for name, value in data.items():
            prop = props[name]
            if value is None and "type" in prop:
                assert prop.get("nullable") is True, (schema_name, name)

    run = send(client, "POST", "/api/v1/agent-runs", auth, {"prompt": "x", "sandbox_id": "box-1"}).get_json()
    nulls_are_documented("RunOut", run["data"])
    device = send(client, "POST", "/api/v1/devices", auth, {"id": "bare", "kind": "sandbox", "driver": "local"})
    nulls_are_documented("DeviceOut", device.get_json()["data"])


@pytest.mark.parametrize("method, path, allowed", [
    ("TRACE", "/api/v1/agent-runs", {"GET", "POST"}),
    ("DELETE", "/api/v1/agent-runs", {"GET", "POST"}),
    ("PUT", "/api/v1/devices/box-1", {"GET", "PATCH", "DELETE"}),
])
def test_a_405_names_the_allowed_methods(client, auth, method, path, allowed):
    resp = client.open(path, method=method, headers=auth)
    assert_error(resp, 405, "method_not_allowed")
    assert allowed <= {m.strip() for m in resp.headers.get("Allow", "").split(",")}  # RFC 9110: MUST
