"""The OpenAPI document (/api/v1/openapi.json) describes what the server does: every response field
required, null only where documented `nullable`, timestamps as date-time, the vocabulary's enums, the
request and response headers, the Server-Sent Events answer and each operation's errors.

The `unit` tests read the document of an app built without a database (building it connects to
nothing); the others hold real answers of the API to it, validated with jsonschema.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator

from agentruns import vocabulary
from core.models import Device, Run
from tests.offline_app import offline_client

RUNS = "/api/v1/agent-runs"
RUN = "/api/v1/agent-runs/{run_id}"
CANCEL = "/api/v1/agent-runs/{run_id}/cancel"
EVENTS = "/api/v1/agent-runs/{run_id}/events"
DEVICES = "/api/v1/devices"
DEVICE = "/api/v1/devices/{device_id}"
DEVICE_TEST = "/api/v1/devices/{device_id}/test"
WEBHOOKS = "/api/v1/webhooks"
WEBHOOK = "/api/v1/webhooks/{endpoint_id}"
ROTATE = "/api/v1/webhooks/{endpoint_id}/rotate-secret"
DELIVERIES = "/api/v1/webhooks/{endpoint_id}/deliveries"
REDELIVER = "/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
KEYS = "/api/v1/keys"
KEY = "/api/v1/keys/{prefix}"
KEY_REVOKE = "/api/v1/keys/{prefix}/revoke"
KEY_ROTATE = "/api/v1/keys/{prefix}/rotate"
ADMIN_STATS = "/api/v1/admin/stats"

# Each operation's error statuses, besides `default` (an unexpected 500). 401, 429 and 503 can answer
# any request (the key check, the rate limit, an outage); 413 and 415 any POST or PATCH (the size
# limit, the content-type check); 400 a JSON body that does not parse; 422 a failed validation.
ERRORS = {
    ("post", RUNS): {400, 401, 409, 413, 415, 422, 429, 503},
    ("get", RUNS): {401, 422, 429, 503},
    ("get", RUN): {401, 404, 422, 429, 503},
    ("post", CANCEL): {401, 404, 409, 413, 415, 429, 503},
    ("get", EVENTS): {401, 404, 422, 429, 503},
    ("post", DEVICES): {400, 401, 409, 413, 415, 422, 429, 503},
    ("get", DEVICES): {401, 429, 503},
    ("get", DEVICE): {401, 404, 429, 503},
    ("patch", DEVICE): {400, 401, 404, 413, 415, 422, 429, 503},
    ("delete", DEVICE): {401, 404, 409, 429, 503},
    ("post", DEVICE_TEST): {401, 404, 413, 415, 429, 503},
    ("post", WEBHOOKS): {400, 401, 413, 415, 422, 429, 503},
    ("get", WEBHOOKS): {401, 429, 503},
    ("get", WEBHOOK): {401, 404, 429, 503},
    ("patch", WEBHOOK): {400, 401, 404, 413, 415, 422, 429, 503},
    ("delete", WEBHOOK): {401, 404, 409, 429, 503},
    ("post", ROTATE): {401, 404, 413, 415, 429, 503},
    ("get", DELIVERIES): {401, 404, 422, 429, 503},
    ("post", REDELIVER): {401, 404, 409, 413, 415, 429, 503},
    ("get", KEYS): {401, 429, 503},
    ("post", KEYS): {400, 401, 403, 413, 415, 422, 429, 503},
    ("get", KEY): {401, 404, 429, 503},
    ("post", KEY_REVOKE): {401, 403, 404, 413, 415, 429, 503},
    ("post", KEY_ROTATE): {401, 403, 404, 409, 413, 415, 429, 503},
    ("get", ADMIN_STATS): {401, 403, 422, 429, 503},
}
SUCCESS = {("post", RUNS): {"200", "201"}, ("post", DEVICES): {"201"}, ("delete", DEVICE): {"204"},
           ("post", WEBHOOKS): {"201"}, ("delete", WEBHOOK): {"204"}, ("post", REDELIVER): {"202"},
           ("post", KEYS): {"201"}, ("post", KEY_ROTATE): {"201"}}

# Response schemas: every field always sent. The ones below are null until (or unless) set.
RESPONSE_SCHEMAS = ("RunError", "RunSummary", "RunOut", "RunEnvelope", "RunListEnvelope", "EventOut",
                    "EventListEnvelope", "DeviceOut", "DeviceEnvelope", "DeviceListEnvelope", "DeviceTestError",
                    "DeviceTest", "DeviceTestEnvelope", "ErrorBody", "ErrorDetail", "KeyOut", "KeyWithSecret",
                    "KeyEnvelope", "KeySecretEnvelope", "KeyListEnvelope", "PoolStats", "DeviceStats", "WorkerStats",
                    "FleetStats", "FleetStatsEnvelope")
NULLABLE = {
    "RunSummary": {"finished_at"},
    "RunOut": {"finished_at", "started_at", "model", "command", "output", "stdout", "stderr", "exit_code", "error",
               "usage", "cost_usd", "session_id", "request_id", "webhook_url"},
    "RunListEnvelope": {"next_cursor"},
    "DeviceOut": {"name", "host", "username", "host_key", "default_cwd"},
    "DeviceTest": {"latency_ms", "host_key", "error"},
    "KeyOut": {"name", "last_used_at", "expires_at", "revoked_at"},
    "KeyWithSecret": {"name", "last_used_at", "expires_at", "revoked_at"},
    "PoolStats": {"oldest_queued_seconds", "live_workers", "free_worker_slots"},
    "DeviceStats": {"oldest_queued_seconds", "last_connected_at", "connect_failures", "first_failure_at"},
    "FleetStats": {"workers"},
}
TIMESTAMPS = {"RunSummary": {"created_at", "finished_at"},
              "RunOut": {"created_at", "finished_at", "started_at", "updated_at"},
              "EventOut": {"at"}, "DeviceOut": {"created_at", "updated_at"},
              "KeyOut": {"created_at", "last_used_at", "expires_at", "revoked_at"},
              "DeviceStats": {"last_connected_at", "first_failure_at"}}
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(scope="module")
def spec() -> dict:
    with offline_client() as client:
        resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.get_json()


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        kind, name = node["$ref"].removeprefix("#/components/").split("/")
        node = spec["components"][kind][name]
    return node


def schema(spec: dict, name: str) -> dict:
    return spec["components"]["schemas"][name]


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method, path, operation


def parameters(spec: dict, operation: dict) -> dict[tuple[str, str], dict]:
    return {(p["in"], p["name"]): p for p in (resolve(spec, p) for p in operation.get("parameters", []))}


def response(spec: dict, method: str, path: str, status: str) -> dict:
    return resolve(spec, spec["paths"][path][method]["responses"][status])


# --- the document ------------------------------------------------------------------------------------
@pytest.mark.unit
def test_response_schemas_list_every_field_as_required(spec):
    for name in RESPONSE_SCHEMAS:
        body = schema(spec, name)
        assert set(body.get("required", [])) == set(body["properties"]), name
        assert body["additionalProperties"] is False, name  # and nothing else is sent


@pytest.mark.unit
def test_exactly_the_fields_that_can_be_null_are_nullable(spec):
    for name in RESPONSE_SCHEMAS:
        nullable = {field for field, prop in schema(spec, name)["properties"].items() if prop.get("nullable")}
        assert nullable == NULLABLE.get(name, set()), name


@pytest.mark.unit
@pytest.mark.parametrize("name, table", [("RunOut", Run.__table__), ("DeviceOut", Device.__table__)])
def test_nullable_fields_are_the_nullable_columns(spec, name, table):
    props = schema(spec, name)["properties"]
    columns = {field: table.c[field] for field in props if field in table.c}
    assert len(columns) >= 15, columns  # most fields are columns as they are
    for field, column in columns.items():
        assert bool(props[field].get("nullable")) == column.nullable, (name, field)


@pytest.mark.unit
def test_timestamps_are_date_time_strings(spec):
    for name, fields in TIMESTAMPS.items():
        props = schema(spec, name)["properties"]
        assert {f for f in props if f.endswith("_at") or f == "at"} == fields, name
        for field in fields:
            assert (props[field]["type"], props[field]["format"]) == ("string", "date-time"), (name, field)


@pytest.mark.unit
def test_response_enums_are_the_vocabulary(spec):
    for name in ("RunSummary", "RunOut"):
        props = schema(spec, name)["properties"]
        assert props["status"]["enum"] == list(vocabulary.STATUSES), name
        assert props["provider"]["enum"] == list(vocabulary.PROVIDERS), name
        assert props["target_kind"]["enum"] == list(vocabulary.KINDS), name
    assert schema(spec, "EventOut")["properties"]["type"]["enum"] == list(vocabulary.EVENT_TYPES)
    device = schema(spec, "DeviceOut")["properties"]
    assert device["kind"]["enum"] == list(vocabulary.KINDS)
    assert device["driver"]["enum"] == schema(spec, "DeviceCreate")["properties"]["driver"]["enum"] == ["ssh", "local"]
    query = parameters(spec, spec["paths"][RUNS]["get"])
    assert query[("query", "status")]["schema"]["enum"] == list(vocabulary.STATUSES)
    assert query[("query", "provider")]["schema"]["enum"] == list(vocabulary.PROVIDERS)


@pytest.mark.unit
def test_fields_without_a_plain_type_are_typed(spec):
    run = schema(spec, "RunOut")["properties"]
    assert run["cancel_requested"]["type"] == "boolean"
    assert run["error"] == {"nullable": True, "allOf": [{"$ref": "#/components/schemas/RunError"}]}
    assert schema(spec, "DeviceTest")["properties"]["error"] == {
        "nullable": True, "allOf": [{"$ref": "#/components/schemas/DeviceTestError"}]}
    data = schema(spec, "EventOut")["properties"]["data"]
    assert [s["type"] for s in data["oneOf"]] == ["string", "object"]
    wait = schema(spec, "RunCreate")["properties"]["wait"]
    assert wait["oneOf"][0]["type"] == "boolean"
    assert {k: wait["oneOf"][1][k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer", "minimum": 0, "maximum": 600}
    assert schema(spec, "RunCreate")["properties"]["env"]["additionalProperties"] == {"type": "string"}
    # apispec's own form of a nullable object, `anyOf: [{type: object, nullable: true}, $ref]`, admits any object.
    assert "anyOf" not in json.dumps(spec["components"]["schemas"])
    # A property without a type is only one with oneOf/allOf: none is left as `{}` or readOnly alone.
    for name, body in spec["components"]["schemas"].items():
        for field, prop in body.get("properties", {}).items():
            assert {"type", "$ref", "oneOf", "allOf"} & set(prop), (name, field)


@pytest.mark.unit
def test_device_labels_are_string_maps_and_no_pagination_leftover(spec):
    out, create = schema(spec, "DeviceOut")["properties"], schema(spec, "DeviceCreate")["properties"]
    assert out["labels"]["additionalProperties"] == create["labels"]["additionalProperties"] == {"type": "string"}
    assert set(out["providers"]["additionalProperties"]["properties"]) == {"executable", "extra_args", "env_names"}
    assert "PaginationMetadata" not in spec["components"]["schemas"]
    assert "PAGINATION" not in spec["components"].get("headers", {})


@pytest.mark.unit
def test_request_headers_and_the_metadata_filter(spec):
    for method, path, operation in operations(spec):
        request_id = parameters(spec, operation)[("header", "X-Request-Id")]
        assert request_id["required"] is False and request_id["schema"] == {"type": "string"}, (method, path)
    create = parameters(spec, spec["paths"][RUNS]["post"])
    key = create[("header", "Idempotency-Key")]
    assert key["required"] is False and (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
    assert ("header", "Last-Event-ID") in parameters(spec, spec["paths"][EVENTS]["get"])
    for method, path, operation in operations(spec):
        headers = {name for where, name in parameters(spec, operation) if where == "header"}
        expected = {("post", RUNS): {"Idempotency-Key"}, ("get", EVENTS): {"Last-Event-ID"}}.get((method, path), set())
        assert headers == {"X-Request-Id", *expected}, (method, path)
    metadata = parameters(spec, spec["paths"][RUNS]["get"])[("query", "metadata")]
    assert (metadata["style"], metadata["explode"]) == ("deepObject", True)
    assert metadata["schema"] == {"type": "object", "additionalProperties": {"type": "string"}}


@pytest.mark.unit
def test_response_headers(spec):
    for method, path, operation in operations(spec):
        for status in operation["responses"]:
            headers = {name: resolve(spec, h) for name, h in response(spec, method, path, status)["headers"].items()}
            assert headers["X-Request-Id"]["required"] is True, (method, path, status)
            if status in ("429", "503"):
                assert headers["Retry-After"]["required"] is True, (method, path, status)
                assert headers["Retry-After"]["schema"]["type"] == "integer"
            if status == "401":
                assert headers["WWW-Authenticate"]["schema"]["enum"] == ["Bearer"]
    replayed = response(spec, "post", RUNS, "200")["headers"]
    assert replayed["Idempotent-Replayed"] == {"required": True, "schema": {"type": "string", "enum": ["true"]}}
    for method, path, status in (("post", RUNS, "200"), ("post", RUNS, "201"), ("post", DEVICES, "201")):
        location = response(spec, method, path, status)["headers"]["Location"]
        assert location["required"] is True and location["schema"]["format"] == "uri-reference"
    assert "Idempotent-Replayed" not in response(spec, "post", RUNS, "201")["headers"]
    in_use = response(spec, "post", RUNS, "409")["headers"]["Retry-After"]  # idempotency_key_in_use only
    assert in_use["required"] is False


@pytest.mark.unit
def test_events_answer_json_or_an_event_stream(spec):
    content = response(spec, "get", EVENTS, "200")["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/EventListEnvelope"}
    assert content["text/event-stream"]["schema"]["type"] == "string"
    assert content["text/event-stream"]["example"].startswith("retry: 1000\n\nid: ")
    for method, path, operation in operations(spec):
        if (method, path) != ("get", EVENTS):
            assert not any("text/event-stream" in resolve(spec, r).get("content", {})
                           for r in operation["responses"].values()), (method, path)


@pytest.mark.unit
def test_each_operation_lists_its_errors(spec):
    listed = {(method, path): operation["responses"] for method, path, operation in operations(spec)}
    assert set(listed) == set(ERRORS)
    for key, responses in listed.items():
        assert "default" in responses, key
        assert {int(s) for s in responses if s.startswith(("4", "5"))} == ERRORS[key], key
        assert {s for s in responses if s.startswith("2")} == SUCCESS.get(key, {"200"}), key


@pytest.mark.unit
def test_every_error_answers_the_error_body(spec):
    for method, path, operation in operations(spec):
        for status in operation["responses"]:
            if status == "default" or status.startswith(("4", "5")):
                content = response(spec, method, path, status)["content"]
                assert content == {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                assert response(spec, method, path, status)["description"], (method, path, status)
    assert schema(spec, "ErrorBody")["required"] == ["error", "request_id"]


@pytest.mark.unit
def test_every_reference_resolves(spec):
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(spec)))
    assert refs
    for ref in refs:
        resolve(spec, {"$ref": ref})  # KeyError if dangling


@pytest.mark.unit
def test_the_docs_page_serves_without_a_database():
    with offline_client() as client:
        page = client.get("/api/v1/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.get_data(as_text=True)


# --- real answers against the document ---------------------------------------------------------------
def to_json_schema(node):
    """An OpenAPI 3.0 schema object as JSON Schema: `nullable` becomes a null type (or alternative)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("nullable", "example", "readOnly", "writeOnly"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(prop) for name, prop in value.items()}
        elif key in ("allOf", "oneOf", "anyOf"):
            out[key] = [to_json_schema(s) for s in value]
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if node.get("nullable"):
        if "type" in out and not {"allOf", "oneOf", "anyOf", "$ref"} & set(out):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def check_answer(spec: dict, method: str, path: str, resp) -> None:
    """The answer's status, content type, required headers and body are what the document says."""
    responses = spec["paths"][path][method]["responses"]
    status = str(resp.status_code)
    assert status in responses, (method, path, status, resp.get_data(as_text=True)[:500])
    documented = resolve(spec, responses[status])
    for name, header in documented.get("headers", {}).items():
        header = resolve(spec, header)
        if header.get("required"):
            assert name in resp.headers, (method, path, status, name)
        if name in resp.headers and "enum" in header["schema"]:
            assert resp.headers[name] in header["schema"]["enum"], (method, path, status, name)
        if name in resp.headers and header["schema"].get("type") == "integer":
            assert resp.headers[name].isdigit(), (method, path, status, name)
        if name in resp.headers and "pattern" in header["schema"]:
            assert re.search(header["schema"]["pattern"], resp.headers[name]), (method, path, status, name)
    if resp.status_code == 204:
        assert "content" not in documented and resp.data == b""
        return
    assert resp.mimetype in documented["content"], (method, path, status, resp.mimetype)
    if resp.mimetype != "application/json":
        return
    root = {**to_json_schema(documented["content"]["application/json"]["schema"]),
            "components": {"schemas": {n: to_json_schema(s) for n, s in spec["components"]["schemas"].items()}}}
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft202012Validator(root).iter_errors(resp.get_json())]
    assert not errors, (method, path, status, errors)
    for timestamp in re.findall(r'"(?:\w+_at|at)": "([^"]+)"', resp.get_data(as_text=True)):
        assert UTC_TIMESTAMP.match(timestamp), timestamp


def test_real_answers_match_the_document(quiet_client, auth, local_device, settings) -> None:
    client = quiet_client  # no worker listens to its Redis: the run below stays queued, the device busy
    spec = client.get("/api/v1/openapi.json").get_json()

    def call(method, template, path=None, **kwargs):
        resp = client.open(path or template, method=method.upper(), **kwargs)
        check_answer(spec, method, template, resp)
        return resp

    box = local_device["id"]
    body = {"prompt": "hi", "sandbox_id": box, "metadata": {"team": "infra"}}
    created = call("post", RUNS, json=body, headers={**auth, "Idempotency-Key": "k-1", "X-Request-Id": "req.1"})
    assert created.status_code == 201 and created.headers["X-Request-Id"] == "req.1"
    run = created.get_json()["data"]
    assert created.headers["Location"] == f"{RUNS}/{run['id']}" and run["request_id"] == "req.1"
    replayed = call("post", RUNS, json=body, headers={**auth, "Idempotency-Key": "k-1"})
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    assert call("post", RUNS, json={**body, "prompt": "other"},
                headers={**auth, "Idempotency-Key": "k-1"}).status_code == 422  # idempotency_key_reused
    run_path = RUN.replace("{run_id}", run["id"])
    call("get", RUN, run_path, headers=auth)
    call("get", RUN, run_path, query_string={"wait": 601}, headers=auth)  # 422
    call("get", RUN, RUN.replace("{run_id}", "no-such-run"), headers=auth)  # 404
    call("get", RUNS, headers=auth, query_string={"limit": 1})
    call("get", RUNS, headers=auth, query_string={"colour": "red"})  # 422: unknown query parameter
    events_path = EVENTS.replace("{run_id}", run["id"])
    call("get", EVENTS, events_path, headers=auth)
    assert call("delete", DEVICE, DEVICE.replace("{device_id}", box), headers=auth).status_code == 409  # busy
    canceled = call("post", CANCEL, CANCEL.replace("{run_id}", run["id"]), headers=auth).get_json()["data"]
    assert canceled["status"] == "canceled" and canceled["error"]["code"] == "canceled"
    assert call("get", EVENTS, events_path, headers={**auth, "Accept": "application/json"}).get_json()["data"]

    # The stream: each frame's data is an EventOut.
    stream = call("get", EVENTS, events_path, headers={**auth, "Accept": "text/event-stream", "Last-Event-ID": "0"})
    frames = re.findall(r"^data: (.*)$", stream.get_data(as_text=True), re.M)
    assert len(frames) >= 2
    root = {**to_json_schema({"$ref": "#/components/schemas/EventOut"}),
            "components": {"schemas": {n: to_json_schema(s) for n, s in spec["components"]["schemas"].items()}}}
    for frame in frames:
        Draft202012Validator(root).validate(json.loads(frame))

    device_path = DEVICE.replace("{device_id}", box)
    call("get", DEVICES, headers=auth)
    call("get", DEVICE, device_path, headers=auth)
    call("patch", DEVICE, device_path, json={"labels": {"tier": "gold"}, "name": None}, headers=auth)
    call("post", DEVICE_TEST, DEVICE_TEST.replace("{device_id}", box), headers=auth)
    call("post", DEVICES, json={"id": box, "kind": "sandbox", "driver": "local"}, headers=auth)  # 409
    call("post", DEVICES, json={"id": "ssh-1", "kind": "sandbox", "host": "h", "username": "u", "password": "p",
                                "trust_on_first_use": True, "labels": {"a": "b"}}, headers=auth)
    call("get", DEVICE, DEVICE.replace("{device_id}", "ssh-1"), headers=auth)
    call("delete", DEVICE, DEVICE.replace("{device_id}", "ssh-1"), headers=auth)  # 204
    call("get", DEVICE, DEVICE.replace("{device_id}", "ssh-1"), headers=auth)  # 404

    # The errors answered around the views.
    call("get", DEVICES)  # 401
    call("post", DEVICES, data="{", content_type="application/json", headers=auth)  # 400
    call("post", DEVICES, data="x", content_type="text/plain", headers=auth)  # 415
    call("post", RUNS, data=b'{"prompt": "' + b"x" * settings.max_body_bytes + b'"}',
         content_type="application/json", headers=auth)  # 413
    from app import create_app

    limited = create_app(replace(settings, rate_limit_per_minute=1)).test_client()
    codes: list[int] = []
    while 429 not in codes and len(codes) < 4:  # the limiter counts per clock minute, which may roll over
        resp = limited.get(DEVICES, headers=auth)
        check_answer(spec, "get", DEVICES, resp)
        codes.append(resp.status_code)
    assert codes[-1] == 429 and set(codes) == {200, 429}, codes


def test_the_metadata_filter_is_parsed_as_before(client, auth, local_device):
    """metadata is documented as a deepObject parameter; the view still reads metadata[KEY] itself."""
    for team in ("infra", "web"):
        resp = client.post(RUNS, json={"prompt": "x", "sandbox_id": local_device["id"], "metadata": {"team": team}},
                           headers=auth)
        assert resp.status_code == 201
    found = client.get(RUNS, query_string={"metadata[team]": "infra"}, headers=auth).get_json()["data"]
    assert [r["metadata"] for r in found] == [{"team": "infra"}]
    both = client.get(RUNS, query_string={"metadata[team]": "infra", "metadata[x]": "y"}, headers=auth)
    assert both.status_code == 200 and both.get_json()["data"] == []
    bare = client.get(RUNS, query_string={"metadata": "infra"}, headers=auth)  # no field named metadata
    assert bare.status_code == 422 and "metadata" in bare.get_json()["error"]["details"]["fields"]


def test_key_answers_match_the_document(client, settings) -> None:
    from tests.conftest import make_key

    spec = client.get("/api/v1/openapi.json").get_json()
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    _, raw = make_key(tenant)
    from core import db
    from core.services.keys import create_key

    with db.session() as s:
        _, operator, _ = create_key(s, tenant, role="operator")
    auth = {"Authorization": f"Bearer {raw}"}

    def call(method, template, path=None, **kwargs):
        resp = client.open(path or template, method=method.upper(), **kwargs)
        check_answer(spec, method, template, resp)
        return resp

    created = call("post", KEYS, json={"name": "ci", "expires_in_days": 1}, headers=auth)
    assert created.status_code == 201
    prefix = created.get_json()["data"]["prefix"]
    assert call("post", KEYS, json={"role": "operator"}, headers=auth).status_code == 403
    assert call("post", KEYS, json={"expires_in_days": -1}, headers=auth).status_code == 422
    assert call("get", KEYS, headers=auth).status_code == 200
    assert call("get", KEY, KEY.replace("{prefix}", prefix), headers=auth).status_code == 200
    assert call("get", KEY, KEY.replace("{prefix}", "nope"), headers=auth).status_code == 404
    assert call("post", KEY_ROTATE, KEY_ROTATE.replace("{prefix}", prefix), headers=auth).status_code == 201
    assert call("post", KEY_ROTATE, KEY_ROTATE.replace("{prefix}", prefix), headers=auth).status_code == 409
    assert call("post", KEY_REVOKE, KEY_REVOKE.replace("{prefix}", prefix), headers=auth).status_code == 200
    assert call("post", KEY_REVOKE, KEY_REVOKE.replace("{prefix}", operator[:17]), headers=auth).status_code == 403
