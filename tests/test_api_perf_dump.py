"""The planned dump of a run (core.run_shape.PlannedDump) answers exactly what marshmallow's own dump does."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from marshmallow import Schema

from core.models import Run
from core.run_shape import RunOut, RunSummary, run_from_snapshot

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)


def _runs() -> list[Run]:
    base = dict(id=uuid.uuid4(), tenant_id=uuid.uuid4(), target_kind="sandbox", target_id="box-1", provider="custom",
                prompt="p", metadata_={}, status="queued", cwd="/w", timeout=60, epoch=0, stdout_truncated=False,
                stderr_truncated=False, created_at=T0, updated_at=T0)
    finished = {**base, "status": "failed", "output": "o", "stdout": "x" * 100, "stderr": "", "exit_code": 2,
                "error": {"code": "timeout", "message": "took too long"}, "usage": {"input_tokens": 3},
                "cost_usd": 1, "session_id": "s", "cancel_requested_at": T0, "request_id": "r",
                "started_at": T0 + timedelta(seconds=1), "finished_at": datetime(2026, 1, 1, 3, tzinfo=timezone(
                    timedelta(hours=5))), "webhook_url": "https://example.com/h", "model": "m-1",
                "command": "true", "metadata_": {"a": [1, {"b": None}], "n": 1.5}, "stdout_truncated": True}
    partial_error = {**finished, "error": {"code": "worker_lost"}, "cost_usd": None, "usage": None}
    return [Run(**base), Run(**finished), Run(**partial_error), Run(id=uuid.uuid4(), status="running"),
            run_from_snapshot({"id": str(uuid.uuid4()), "status": "succeeded", "metadata": {"k": "v"},
                               "created_at": T0.isoformat(), "updated_at": T0.isoformat(), "timeout": 5,
                               "stdout_truncated": False, "stderr_truncated": False})]


@pytest.mark.parametrize("schema_class", [RunOut, RunSummary])
def test_the_planned_dump_equals_marshmallows(schema_class):
    schema = schema_class()
    for run in _runs():
        expected = Schema.dump(schema, run)  # marshmallow's generic path
        assert schema.dump(run) == expected
        assert list(schema.dump(run)) == list(expected)  # same keys in the same order
        assert schema.dump(run) == expected  # the plan, once made, again


def test_many_dicts_and_none_take_marshmallows_path():
    schema = RunSummary()
    runs = _runs()
    assert schema.dump(runs, many=True) == [Schema.dump(schema, r) for r in runs]
    row = {"id": uuid.uuid4(), "status": "queued", "metadata_": {}}
    assert schema.dump(row) == Schema.dump(schema, row)
