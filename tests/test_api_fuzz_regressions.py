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
