"""`agentruns worker` and `beat` exit with Celery's exit code (Celery's worker_main dropped it: a
worker stopped by an unrecoverable error exited 0, and a supervisor restarting only on failure left
the fleet dead, issue #11)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("command", [["worker"], ["beat"]])
@pytest.mark.parametrize("code", [0, 1])
def test_the_exit_code_is_celerys(monkeypatch, command, code):
    from agentruns.cli import main
    from workers.tasks import celery

    seen = []

    def start(argv):  # Celery.start: runs the celery command, returns the code it exited with
        seen.append(argv)
        return code

    monkeypatch.setattr(celery, "start", start)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == code, result.output
    assert seen and seen[0][0] == command[0]
