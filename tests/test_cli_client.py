"""The client CLI (`agentruns sandbox prompt`, `runs`, `devices`) through click's runner and as a real
subprocess, against the live API, worker and beat."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from click.testing import CliRunner

from agentruns.cli import main
from agentruns.client import Client
from tests.stack import AGENTRUNS, ignoring_sigint
from tests.test_client_sdk import new_tenant, wait_status

pytestmark = pytest.mark.e2e


@pytest.fixture()
def tenant(app, live_server, tmp_path):
    return new_tenant(live_server, tmp_path)


@pytest.fixture()
def sdk(tenant):
    with Client(tenant.url, tenant.key) as c:
        yield c


@pytest.fixture()
def cli(tenant):
    """Invoke `agentruns ARGS...` in-process with the tenant's URL and key in the environment."""
    runner = CliRunner()
    env = {"AGENTRUNS_API_URL": tenant.url, "AGENTRUNS_API_KEY": tenant.key}

    def invoke(*args, input=None):
        return runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def prompt_args(command: str, *extra: str) -> list[str]:
    return ["sandbox", "prompt", "box", "--provider", "custom", "--runtime-command", command, *extra]


def test_prompt_prints_the_output_once_and_exits_0(cli):
    result = cli(*prompt_args('echo "hi $(cat)"; echo note >&2', "-m", "k=v"), "--", "hello world")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hi hello world\n"  # streamed live, not printed again at the end
    assert "note\n" in result.stderr and "succeeded" in result.stderr


def test_prompt_failure_exits_1_and_json_parses(cli, sdk):
    result = cli(*prompt_args("echo partial; echo boom >&2; exit 3"), "--", "p")
    assert result.exit_code == 1
    assert result.stdout == "partial\n"
    assert "boom" in result.stderr and "nonzero_exit" in result.stderr and "exit code 3" in result.stderr
    result = cli(*prompt_args("echo out; exit 3", "--json", "-m", "case=json"), "--", "p")
    assert result.exit_code == 1
    run = json.loads(result.stdout)  # --json: the run record and nothing else on stdout
    assert run["status"] == "failed" and run["exit_code"] == 3 and run["output"] == "out\n"
    assert run["metadata"] == {"case": "json"} and sdk.agent_runs.get(run["id"]) == run


def test_prompt_from_stdin_and_no_wait(cli, sdk):
    result = cli(*prompt_args("cat", "--no-wait"), "-", input="from stdin\n")
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    done = sdk.agent_runs.wait(run_id, timeout=15)
    assert done["status"] == "succeeded" and done["output"] == "from stdin\n"
    result = cli("runs", "get", run_id, "--json")
    assert json.loads(result.stdout)["output"] == "from stdin\n"
    text = cli("runs", "get", run_id).stdout
    assert text.splitlines()[0].split() == ["id:", run_id] and text.endswith("\n\nfrom stdin\n")


def test_runs_list_cancel_and_logs(cli, sdk):
    batch = uuid.uuid4().hex[:8]
    ids = [sdk.agent_runs.create(prompt="p", sandbox_id="box", provider="custom", command=f"echo log{i}",
                                 metadata={"batch": batch})["id"] for i in range(3)]
    page = json.loads(cli("runs", "list", "--json", "--metadata", f"batch={batch}", "--limit", "2").stdout)
    assert [r["id"] for r in page["data"]] == ids[:0:-1] and page["next_cursor"]
    every = json.loads(cli("runs", "list", "--json", "-m", f"batch={batch}", "--limit", "2", "--all").stdout)
    assert [r["id"] for r in every["data"]] == ids[::-1]
    table = cli("runs", "list", "-m", f"batch={batch}").stdout.splitlines()
    assert table[0].split() == ["ID", "STATUS", "PROVIDER", "TARGET", "CREATED", "PROMPT"] and len(table) == 4
    sdk.agent_runs.wait(ids[0], timeout=15)
    logs = cli("runs", "logs", ids[0])
    assert logs.exit_code == 0 and logs.stdout == "log0\n" and "· succeeded" in logs.stderr
    follow = cli("runs", "logs", ids[2], "-f")
    assert follow.exit_code == 0 and follow.stdout == "log2\n"
    slow = sdk.agent_runs.create(prompt="p", sandbox_id="box", provider="custom", command="sleep 30")
    wait_status(sdk, slow["id"], "running")
    result = cli("runs", "cancel", slow["id"])
    assert result.exit_code == 0 and "cancel requested" in result.stdout
    assert sdk.agent_runs.wait(slow["id"], timeout=15)["status"] == "canceled"
    assert cli("runs", "logs", slow["id"], "-f").exit_code == 130


def test_errors_are_messages_not_tracebacks(cli, tenant):
    missing = str(uuid.uuid4())
    result = cli("runs", "get", missing)
    assert result.exit_code == 1 and result.stdout == ""
    assert f"error: run '{missing}' not found" in result.stderr
    assert "code: not_found · HTTP 404 · request id: " in result.stderr and "Traceback" not in result.stderr
    result = cli(*prompt_args("true", "--timeout", "5", "--cwd", "relative"), "--", "p")
    assert result.exit_code == 1 and "cwd: must be an absolute path" in result.stderr
    assert cli("runs", "list", "--metadata", "novalue").exit_code == 2
    assert cli("sandbox", "prompt", "box", "--provider", "nope", "--", "p").exit_code == 2
    no_key = CliRunner().invoke(main, ["runs", "list", "--api-url", tenant.url], env={"AGENTRUNS_API_KEY": None})
    assert no_key.exit_code == 2 and "no API key" in no_key.output
    bad_key = CliRunner().invoke(main, ["runs", "list", "--api-url", tenant.url, "--api-key", "ark_live_x"])
    assert bad_key.exit_code == 1 and "invalid or revoked API key" in bad_key.stderr


def test_devices_commands(cli, tmp_path):
    result = cli("devices", "add", "d1", "--kind", "computer", "--driver", "local", "--default-cwd", str(tmp_path),
                 "-l", "team=a", "-e", "TOKEN=secret", "--json")
    assert result.exit_code == 0, result.output
    added = json.loads(result.stdout)
    assert added["id"] == "d1" and added["labels"] == {"team": "a"} and added["env_names"] == ["TOKEN"]
    assert {d["id"] for d in json.loads(cli("devices", "list", "--json").stdout)["data"]} == {"box", "d1"}
    assert "d1" in cli("devices", "list").stdout
    assert "secret" not in cli("devices", "show", "d1").stdout
    on_computer = cli("computer", "prompt", "d1", "--provider", "custom", "--runtime-command", "pwd", "--", "p")
    assert on_computer.exit_code == 0 and on_computer.stdout == f"{tmp_path}\n"
    wrong_kind = cli("sandbox", "prompt", "d1", "--provider", "custom", "--runtime-command", "pwd", "--", "p")
    assert wrong_kind.exit_code == 1 and "is a computer, not a sandbox" in wrong_kind.stderr
    tested = cli("devices", "test", "d1", "--json")
    assert tested.exit_code == 0 and json.loads(tested.stdout)["ok"] is True
    key_file = tmp_path / "id_test"
    key_file.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    result = cli("devices", "add", "ssh1", "--kind", "computer", "--host", "127.0.0.1", "--port", "9",
                 "--username", "me", "--private-key-file", str(key_file), "--trust-on-first-use", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["has_private_key"] is True
    failed = cli("devices", "test", "ssh1")
    assert failed.exit_code == 1 and failed.stderr.startswith("failed: ")
    assert cli("devices", "rm", "d1").stdout == "device d1 deleted\n"
    gone = cli("devices", "show", "d1")
    assert gone.exit_code == 1 and "not found" in gone.stderr


# --- as a real subprocess ------------------------------------------------------------------------------
def spawn(tenant, *args: str) -> subprocess.Popen:
    """`agentruns ARGS` as from a script's `cmd &`: SIGINT ignored, which the CLI must override."""
    env = {**os.environ, "AGENTRUNS_API_URL": tenant.url, "AGENTRUNS_API_KEY": tenant.key}
    return subprocess.Popen(ignoring_sigint([AGENTRUNS, *args]), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_subprocess_streams_output_live(tenant):
    proc = spawn(tenant, *prompt_args("echo first; sleep 2; echo second"), "--", "p")
    try:
        assert proc.stdout.readline() == "first\n"
        assert proc.poll() is None  # the first line arrived while the run was still going
        rest, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert rest == "second\n" and "succeeded" in err


def test_subprocess_exit_codes_and_json(tenant):
    proc = spawn(tenant, *prompt_args("exit 7", "--json"), "--", "p")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert json.loads(out)["exit_code"] == 7
    proc = spawn(tenant, "runs", "list", "--json", "--limit", "1")
    listed, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and json.loads(listed)["data"][0]["id"] == json.loads(out)["id"]


def _wait_running(proc: subprocess.Popen) -> str:
    """Read stderr until the CLI reports the run running; returns the run id."""
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("run "), first
    line = proc.stderr.readline()
    assert "running" in line, line
    return first.split()[1]


def test_interrupt_cancels_with_cancel_on_interrupt(tenant, sdk):
    proc = spawn(tenant, *prompt_args("sleep 30", "--cancel-on-interrupt"), "--", "p")
    try:
        run_id = _wait_running(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "canceling run" in err and "Traceback" not in err
    assert sdk.agent_runs.get(run_id)["status"] == "canceled"


def test_interrupt_without_tty_leaves_the_run_running(tenant, sdk):
    proc = spawn(tenant, *prompt_args("sleep 30"), "--", "p")
    try:
        run_id = _wait_running(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and f"run {run_id} is still running" in err
    # The CLI has exited, so any cancel it sent has been recorded by now.
    run = sdk.agent_runs.get(run_id)
    assert run["status"] == "running" and run["cancel_requested"] is False, run
    sdk.agent_runs.cancel(run_id)


def test_tty_shows_a_spinner_and_asks_before_canceling(tenant, sdk):
    """On a terminal: a rich spinner with the elapsed time, and Ctrl-C asks whether to cancel."""
    import pty
    import threading

    master, slave = pty.openpty()
    env = {**os.environ, "AGENTRUNS_API_URL": tenant.url, "AGENTRUNS_API_KEY": tenant.key, "TERM": "xterm",
           "COLUMNS": "120"}
    proc = subprocess.Popen(ignoring_sigint([AGENTRUNS, *prompt_args("echo started; sleep 30"), "--", "p"]),
                            env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    screen = bytearray()

    def read():
        try:
            while chunk := os.read(master, 4096):
                screen.extend(chunk)
        except OSError:  # EIO once the child has exited and closed the terminal
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for(text: bytes, seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while text not in screen:
            assert time.monotonic() < deadline, f"{text!r} not in {bytes(screen)!r}"
            time.sleep(0.05)

    try:
        wait_for(b"started")
        wait_for(b"running \xc2\xb7 1s")  # the spinner line counts the seconds
        proc.send_signal(signal.SIGINT)
        wait_for(b"Cancel run")
        os.write(master, b"y\n")
        proc.wait(timeout=20)
    finally:
        proc.kill()
        reader.join(5)
        os.close(master)
    assert proc.returncode == 130, bytes(screen)
    run_id = bytes(screen).split(b"run ", 1)[1].split()[0].decode()
    assert sdk.agent_runs.get(run_id)["status"] == "canceled"
