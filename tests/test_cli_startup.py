"""The client CLI imports no server module: `agentruns --help`, `runs list`, `sandbox prompt` stay light.

Each case runs `agentruns.cli` in a fresh interpreter (sys.modules accumulates in this one) and reports
which modules it loaded. Timing is not asserted here: `python -m bench.cli_startup` measures it.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SERVER_MODULES = ("app", "core", "workers", "drivers", "providers", "migrations", "flask", "sqlalchemy", "alembic",
                  "celery", "kombu", "gunicorn", "gevent", "paramiko", "psycopg", "redis")
# The SDK's HTTP stack and the terminal UI: needed to talk to the API, never to print help.
CLIENT_HEAVY = ("httpx", "rich")

# Runs the CLI in-process (as the console script would) and writes the top-level packages it imported.
# For commands that reach the API, a stdlib server on a free port answers like the API would.
PROBE = r"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

argv, report, missing = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for name in missing:  # as if not installed: importing it raises ModuleNotFoundError
    sys.modules[name] = None
if "{url}" in argv:
    class FakeApi(BaseHTTPRequestHandler):
        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # GET /api/v1/agent-runs
            self._send(200, {"data": [], "next_cursor": None})

        def do_POST(self):  # POST /api/v1/agent-runs
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send(201, {"data": {"id": "run-1", "status": "queued"}})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    argv = [a.replace("{url}", f"http://127.0.0.1:{server.server_address[1]}") for a in argv]

import click
from agentruns.cli import main

try:
    code = main.main(argv, prog_name="agentruns", standalone_mode=False)
except click.ClickException as exc:
    exc.show()
    code = exc.exit_code
with open(report, "w") as f:
    json.dump({"exit_code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, f)
"""


def probe(tmp_path, argv: list[str], missing: tuple[str, ...] = ()) -> tuple[dict, str, str]:
    """Run `agentruns ARGV` in a fresh interpreter, `missing` modules made unimportable:
    ({exit_code, modules}, stdout, stderr)."""
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), str(report), json.dumps(missing)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc.stdout, proc.stderr


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["runs", "--help"],
    ["runs", "list", "--help"],
    ["sandbox", "prompt", "--help"],
    ["devices", "add", "--help"],
    ["dev", "--help"],
    ["worker", "--help"],
    ["keys", "create", "--help"],
], ids=" ".join)
def test_help_imports_no_server_module_and_no_http_stack(tmp_path, argv):
    result, out, _ = probe(tmp_path, argv)
    assert result["exit_code"] == 0 and "Usage: agentruns" in out
    loaded = set(result["modules"])
    assert "click" in loaded  # the probe sees what was imported
    assert not loaded & set(SERVER_MODULES), sorted(loaded & set(SERVER_MODULES))
    assert not loaded & set(CLIENT_HEAVY), sorted(loaded & set(CLIENT_HEAVY))


@pytest.mark.parametrize("argv", [
    ["runs", "list", "--api-url", "{url}", "--api-key", "ark_test"],
    ["sandbox", "prompt", "box", "--no-wait", "--api-url", "{url}", "--api-key", "ark_test", "--", "hi"],
], ids=lambda argv: " ".join(argv[:2]))
def test_client_commands_talk_to_the_api_without_server_modules(tmp_path, argv):
    result, out, _ = probe(tmp_path, argv)
    assert result["exit_code"] in (0, None), out
    assert "ID" in out or "run-1" in out, out  # the command reached the fake API and printed its answer
    loaded = set(result["modules"])
    assert "httpx" in loaded
    assert not loaded & set(SERVER_MODULES), sorted(loaded & set(SERVER_MODULES))


@pytest.mark.parametrize(("argv", "missing", "extra"), [
    (["worker"], "celery", "server"),
    (["keys", "create", "--tenant", "t"], "sqlalchemy", "server"),
    (["dev", "--data-dir", "{tmp}/state"], "cryptography", "embedded"),
], ids=lambda v: v[0] if isinstance(v, list) else v)
def test_server_commands_on_a_client_only_install_say_what_to_install(tmp_path, argv, missing, extra):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result, _, err = probe(tmp_path, argv, missing=(missing,))
    assert result["exit_code"] == 1
    assert f"({missing} is not installed): pip install 'agentruns[{extra}]'" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "state").exists()  # `dev` stopped before making its data dir
