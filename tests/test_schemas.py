"""The API's request schemas on their own (no app, no database): what they accept, refuse, and how
they normalise a create request."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError

from app.api.schemas import MAX_JSON_DEPTH, RunCreate, RunListQuery, Wait

pytestmark = pytest.mark.unit


def _errors(schema, body) -> dict:
    with pytest.raises(ValidationError) as caught:
        schema.load(body)
    messages = caught.value.messages
    assert isinstance(messages, dict), messages
    return messages


def test_a_sandbox_create_is_normalised_to_target_id_and_kind():
    data = RunCreate().load({"prompt": "hi", "sandbox_id": "box-1", "provider": "custom", "runtime_command": "cat",
                             "wait": True})
    assert data["target_id"] == "box-1" and data["target_kind"] == "sandbox"
    assert data["command"] == "cat" and "runtime_command" not in data and "sandbox_id" not in data
    assert data["provider"] == "custom" and data["wait"] == 60 and data["metadata"] == {} and data["env"] == {}


@pytest.mark.parametrize(("body", "field"), [
    ({"prompt": "hi"}, "target_id"),
    ({"prompt": "  ", "sandbox_id": "b"}, "prompt"),
    ({"prompt": "a\x00b", "sandbox_id": "b"}, "prompt"),
    ({"prompt": "hi", "sandbox_id": "b", "computer_id": "c"}, "target_kind"),
    ({"prompt": "hi", "sandbox_id": "b", "provider": "gpt-shell"}, "provider"),
    ({"prompt": "hi", "sandbox_id": "b", "provider": "custom"}, "command"),
    ({"prompt": "hi", "sandbox_id": "b", "command": "ls"}, "command"),
    ({"prompt": "hi", "sandbox_id": "b", "cwd": "relative/dir"}, "cwd"),
    ({"prompt": "hi", "sandbox_id": "b", "timeout": 0}, "timeout"),
    ({"prompt": "hi", "sandbox_id": "b", "env": {"AGENTRUNS_X": "1"}}, "env"),
    ({"prompt": "hi", "sandbox_id": "b", "env": {"BAD NAME": "1"}}, "env"),
    ({"prompt": "hi", "sandbox_id": "b", "metadata": {"k": float("nan")}}, "metadata"),
    ({"prompt": "hi", "sandbox_id": "b", "model": "gpt\n"}, "model"),
    ({"prompt": "hi", "sandbox_id": "b", "wait": 601}, "wait"),
])
def test_refused_creates_name_the_field(body, field):
    assert field in _errors(RunCreate(), body)


def test_metadata_nesting_is_limited():
    deep: dict = {}
    node = deep
    for _ in range(MAX_JSON_DEPTH + 1):
        node["k"] = {}
        node = node["k"]
    assert "metadata" in _errors(RunCreate(), {"prompt": "hi", "sandbox_id": "b", "metadata": deep})
    shallow = {"k": {"k": {"k": 1}}}
    assert RunCreate().load({"prompt": "hi", "sandbox_id": "b", "metadata": shallow})["metadata"] == shallow


@pytest.mark.parametrize(("given", "seconds"), [(True, 60), (False, 0), (0, 0), (600, 600)])
def test_wait_accepts_booleans_and_seconds(given, seconds):
    assert Wait().deserialize(given) == seconds


def test_list_query_refuses_an_unknown_status():
    assert "status" in _errors(RunListQuery(), {"status": "paused"})
