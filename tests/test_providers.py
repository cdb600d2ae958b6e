"""Provider adapters: argv/stdin/env building and output parsing, per CLI.

The hermes and custom adapters ship shell wrappers, so those are also run for real here with
subprocess on this machine (a fake `hermes` stands in for the CLI).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from providers import PROVIDERS, ParsedResult, ProviderSettings, RunSpec, get_provider
from providers.hermes import MAX_PROMPT_BYTES, USAGE_MARKER

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "providers"

# Everything a shell could trip over, plus non-ASCII and trailing newlines.
NASTY_PROMPT = "He said \"hi\" & 'bye'; $(id) `id` $HOME \\ * ?\n\tsecond line: ünïcødé €✓ 日本\n\n"

CLI_PROVIDERS = ["claude-code", "codex", "pi", "hermes", "osa"]


def data(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def spec(**kw) -> RunSpec:
    kw.setdefault("run_id", "run_123")
    kw.setdefault("prompt", NASTY_PROMPT)
    return RunSpec(**kw)


def run_invocation(inv, cwd: Path, extra_env: dict[str, str] | None = None, timeout: float = 30):
    """Run an Invocation the way the local driver does: env added, stdin written then closed."""
    env = {**os.environ, **(extra_env or {}), **inv.env}
    return subprocess.run(inv.argv, input=inv.stdin, capture_output=True, env=env, cwd=cwd, timeout=timeout)


# ── registry ─────────────────────────────────────────────────────────────


def test_registry_keys_and_claude_alias():
    assert set(PROVIDERS) == {"claude-code", "claude", "codex", "pi", "hermes", "osa", "custom"}
    assert PROVIDERS["claude"] is PROVIDERS["claude-code"]
    for name, provider in PROVIDERS.items():
        assert get_provider(name) is provider
        assert callable(provider.build) and callable(provider.parse)


def test_get_provider_unknown_names_the_known_ones():
    with pytest.raises(KeyError, match="claude-code"):
        get_provider("gemini")


def test_only_hermes_limits_prompt_size():
    assert get_provider("hermes").max_prompt_bytes == MAX_PROMPT_BYTES
    # One argv string is capped at 131072 bytes including the NUL and the "--oneshot=" prefix.
    assert MAX_PROMPT_BYTES + len("--oneshot=") + 1 < 131072
    for name in ("claude-code", "codex", "pi", "osa", "custom"):
        assert get_provider(name).max_prompt_bytes is None


# ── build: argv, stdin, env ──────────────────────────────────────────────

EXPECTED_ARGV = {
    "claude-code": (
        ["claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"],
        ["--model", "M"],
    ),
    "codex": (
        ["codex", "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"],
        ["--model", "M"],
    ),
    "pi": (["pi", "-p", "--mode", "json", "--no-session"], ["--model", "M"]),
    "osa": (["osa", "run", "--format", "json", "--overdrive"], ["--model", "M"]),
}
TRAILING = {"codex": ["-"]}  # codex reads the prompt from stdin when told "-"


@pytest.mark.parametrize("name", list(EXPECTED_ARGV))
def test_build_argv_without_and_with_model(name):
    base, model_args = EXPECTED_ARGV[name]
    provider = get_provider(name)
    assert provider.build(spec()).argv == base + TRAILING.get(name, [])
    assert provider.build(spec(model="M")).argv == base + model_args + TRAILING.get(name, [])


@pytest.mark.parametrize("name", list(EXPECTED_ARGV))
def test_build_applies_settings(name):
    base, model_args = EXPECTED_ARGV[name]
    settings = ProviderSettings(executable="/opt/bin/agent cli", extra_args=("--x", "a b"), env={"K": "v"})
    inv = get_provider(name).build(spec(model="M", settings=settings))
    assert inv.argv == ["/opt/bin/agent cli"] + base[1:] + model_args + ["--x", "a b"] + TRAILING.get(name, [])
    assert inv.env["K"] == "v"


@pytest.mark.parametrize("name", CLI_PROVIDERS + ["custom"])
def test_stdin_is_the_prompt_in_utf8(name):
    inv = get_provider(name).build(spec(command="true"))
    assert inv.stdin == NASTY_PROMPT.encode("utf-8")
    # The prompt never travels in argv or env: the driver writes it to stdin.
    assert all(NASTY_PROMPT not in arg for arg in inv.argv)
    assert NASTY_PROMPT not in inv.env.values()


def test_claude_sets_is_sandbox_only_for_root():
    claude = get_provider("claude")
    assert claude.build(spec(device_username="root")).env == {"IS_SANDBOX": "1"}
    assert "IS_SANDBOX" not in claude.build(spec(device_username="dev")).env
    assert "IS_SANDBOX" not in claude.build(spec(device_username=None)).env
    # The device's own settings win, so an operator can override it.
    overridden = claude.build(spec(device_username="root", settings=ProviderSettings(env={"IS_SANDBOX": "0"})))
    assert overridden.env["IS_SANDBOX"] == "0"


def test_hermes_argv_is_a_constant_wrapper_then_the_cli():
    hermes = get_provider("hermes")
    plain = hermes.build(spec())
    assert plain.argv[:2] == ["/bin/sh", "-c"]
    assert plain.argv[3:] == ["hermes-wrapper", "hermes", "--yolo"]
    configured = hermes.build(spec(model="M", settings=ProviderSettings(
        executable="/opt/hermes", extra_args=("--provider", "custom"), env={"HERMES_HOME": "/h"})))
    assert configured.argv[2] == plain.argv[2]  # the script does not depend on the run
    assert configured.argv[3:] == ["hermes-wrapper", "/opt/hermes", "--provider", "custom", "--yolo", "-m", "M"]
    assert configured.env == {"HERMES_HOME": "/h"}


def test_custom_passes_command_in_env_with_a_constant_script():
    custom = get_provider("custom")
    a = custom.build(spec(command="echo $(whoami)", model="gpt-x"))
    b = custom.build(spec(command="rm -rf 'nothing'", run_id="other"))
    assert a.argv == b.argv == ["/bin/sh", "-c", a.argv[2], "agentruns-custom", ""]
    name = a.env.pop("AGENTRUNS_PROMPT_FILE")
    assert a.env == {"AGENTRUNS_COMMAND": "echo $(whoami)", "AGENTRUNS_RUN_ID": "run_123", "AGENTRUNS_MODEL": "gpt-x"}
    assert b.env["AGENTRUNS_MODEL"] == ""
    # The prompt file's name is secret (env only) and new for every invocation.
    assert name.startswith("agentruns-prompt.") and len(name) > 40 and name != b.env["AGENTRUNS_PROMPT_FILE"]
    assert name not in " ".join(a.argv)


def test_custom_settings_cannot_override_the_run_variables():
    custom = get_provider("custom")
    inv = custom.build(spec(command="true", settings=ProviderSettings(
        executable="/bin/bash", extra_args=("x",), env={"AGENTRUNS_RUN_ID": "forged", "TOKEN": "t"})))
    assert inv.env["AGENTRUNS_RUN_ID"] == "run_123"
    assert inv.env["TOKEN"] == "t"
    assert inv.argv[4:] == ["/bin/bash", "x"]


def test_custom_without_a_command_is_refused():
    with pytest.raises(ValueError):
        get_provider("custom").build(spec(command=None))


# ── parse: Claude Code ───────────────────────────────────────────────────

CLAUDE_SESSION = "0f3c2a9e-8b1d-4c6e-9a57-2d1e4b7c9f10"


def test_claude_parses_the_result_line():
    r = get_provider("claude").parse(0, data("claude-code-success.jsonl"), "")
    assert r.succeeded and r.error_code is None
    assert r.output == "The directory holds one file: a.txt"
    assert r.session_id == CLAUDE_SESSION
    assert r.cost_usd == pytest.approx(0.01234)
    assert r.usage["input_tokens"] == 42 and r.usage["output_tokens"] == 20


def test_claude_is_error_with_exit_0_and_subtype_success_fails():
    r = get_provider("claude").parse(0, data("claude-code-is-error-exit0.jsonl"), "")
    assert not r.succeeded
    assert r.error_code == "provider_error"
    assert r.error_message.startswith("API Error: 500")
    assert r.session_id == CLAUDE_SESSION


def test_claude_error_subtype_uses_the_errors_list():
    line = {"type": "result", "subtype": "error_max_turns", "is_error": False, "session_id": "s",
            "errors": ["Reached maximum number of turns (3)"], "total_cost_usd": 0.5}
    r = get_provider("claude").parse(1, json.dumps(line), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message == "Reached maximum number of turns (3)"
    assert r.cost_usd == 0.5


def test_claude_without_result_line_uses_exit_code_and_stderr():
    init = '{"type":"system","subtype":"init","session_id":"s1"}\n'
    r = get_provider("claude").parse(1, init, "warming up\n\nError: Invalid API key\n")
    assert not r.succeeded and r.error_code == "provider_error"
    assert "code 1" in r.error_message and r.error_message.endswith("Error: Invalid API key")
    assert r.session_id == "s1"  # taken from the init line
    not_found = get_provider("claude").parse(127, "", "sh: 1: claude: not found\n")
    assert not_found.error_code == "nonzero_exit" and "claude: not found" in not_found.error_message
    assert get_provider("claude").parse(2, "", "").error_code == "nonzero_exit"


def test_claude_trusts_the_result_over_a_nonzero_exit():
    r = get_provider("claude").parse(1, data("claude-code-success.jsonl"), "some warning")
    assert r.succeeded


# ── parse: Codex ─────────────────────────────────────────────────────────

CODEX_THREAD = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def test_codex_parses_agent_message_usage_and_thread():
    r = get_provider("codex").parse(0, data("codex-success.jsonl"), "")
    assert r.succeeded
    assert r.output == "The directory holds one file: a.txt"
    assert r.session_id == CODEX_THREAD
    assert r.usage == {"input_tokens": 2210, "cached_input_tokens": 1024, "output_tokens": 57}
    assert r.cost_usd is None  # codex reports tokens, not dollars


def test_codex_turn_failed_is_a_provider_error():
    r = get_provider("codex").parse(1, data("codex-turn-failed.jsonl"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message == "unexpected status 500 Internal Server Error: upstream failed"
    assert r.session_id == CODEX_THREAD


def test_codex_error_event_then_completed_turn_succeeds():
    lines = [
        {"type": "thread.started", "thread_id": "t"},
        {"type": "error", "message": "Reconnecting... 1/5"},
        {"type": "item.completed", "item": {"id": "i", "type": "error", "message": "config warning"}},
        {"type": "item.completed", "item": {"id": "j", "type": "agent_message", "text": "done"}},
        {"type": "turn.completed", "usage": {"input_tokens": 1, "cached_input_tokens": 0, "output_tokens": 1}},
    ]
    r = get_provider("codex").parse(0, "\n".join(map(json.dumps, lines)), "")
    assert r.succeeded and r.output == "done"


def test_codex_error_without_a_turn_fails():
    lines = [{"type": "thread.started", "thread_id": "t"}, {"type": "error", "message": "stream disconnected"}]
    r = get_provider("codex").parse(1, "\n".join(map(json.dumps, lines)), "")
    assert not r.succeeded and r.error_code == "provider_error" and r.error_message == "stream disconnected"


# ── parse: recorded from the genuine Claude Code and Codex (tests/test_real_clis.py pins) ──


def test_claude_2_1_332_recorded_runs():
    ok = get_provider("claude").parse(0, data("claude-code-2.1.332-success.jsonl"), "")
    assert ok.succeeded and ok.output == "STANDIN-ANSWER: rec"
    assert ok.session_id == "74b97ba2-baae-4488-942a-e1cde1d135a2"
    assert ok.cost_usd == pytest.approx(0.00514)
    assert ok.usage["input_tokens"] == 1200 and ok.usage["output_tokens"] == 17
    tool = get_provider("claude").parse(0, data("claude-code-2.1.332-tool-call.jsonl"), "")
    assert tool.succeeded and tool.output == "STANDIN-DONE: rec"
    assert tool.usage["input_tokens"] == 2400 and tool.cost_usd == pytest.approx(0.01028)


def test_claude_2_1_332_http_500_is_error_with_subtype_success():
    r = get_provider("claude").parse(1, data("claude-code-2.1.332-api-error-500-exit1.jsonl"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message.startswith("API Error: 500 STANDIN-ERROR 500 for rec.")
    assert r.session_id == "91894ae1-385f-46ff-8811-7ade336be883"


def test_codex_0_171_0_recorded_runs():
    ok = get_provider("codex").parse(0, data("codex-0.171.0-success.jsonl"), "")
    # The "Model metadata ... not found" *item* of type error is a warning, not a failure.
    assert ok.succeeded and ok.output == "STANDIN-ANSWER: rec"
    assert ok.session_id == "01a22341-b71f-73c0-867a-ede2fe4ea5ed"
    assert ok.usage["input_tokens"] == 1200 and ok.usage["output_tokens"] == 17 and ok.cost_usd is None
    tool = get_provider("codex").parse(0, data("codex-0.171.0-tool-call.jsonl"), "")
    assert tool.succeeded and tool.output == "STANDIN-DONE: rec" and tool.usage["input_tokens"] == 2400


def test_codex_0_171_0_http_500_turn_failed():
    r = get_provider("codex").parse(1, data("codex-0.171.0-http-500-exit1.jsonl"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    # Codex words a 5xx its own way; the server's message is not in its output.
    assert r.error_message == "We’re currently experiencing high demand, which may cause temporary errors."


# ── parse: pi ────────────────────────────────────────────────────────────

PI_SESSION = "01a22321-b14c-774f-aad8-eb29ff861d49"


def test_pi_parses_the_last_assistant_message():
    r = get_provider("pi").parse(0, data("pi-0.73.1-success.jsonl"), "")
    assert r.succeeded and r.output == "ECHO:10"
    assert r.session_id == PI_SESSION
    assert r.usage == {"input": 11, "output": 3, "cacheRead": 0, "cacheWrite": 0, "totalTokens": 14}
    assert r.cost_usd == 0


def test_pi_sums_usage_and_cost_over_model_calls():
    r = get_provider("pi").parse(0, data("pi-0.73.1-tool-call.jsonl"), "")
    assert r.succeeded
    assert r.output == "ECHO:13"  # not the text that came with the tool call
    assert r.usage["input"] == 31 and r.usage["output"] == 8 and r.usage["totalTokens"] == 39
    assert r.cost_usd == pytest.approx(0.000135 + 0.000078)


def test_pi_stop_reason_error_with_exit_0_fails():
    r = get_provider("pi").parse(0, data("pi-0.73.1-model-error-exit0.jsonl"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message == "500 stub failure"
    assert r.output == ""


def test_pi_aborted_without_message_names_the_stop_reason():
    line = {"type": "message_end", "message": {"role": "assistant", "content": [], "stopReason": "aborted"}}
    r = get_provider("pi").parse(0, json.dumps(line), "")
    assert not r.succeeded and r.error_message == "pi stopped: aborted"


# ── parse: Hermes ────────────────────────────────────────────────────────


def test_hermes_splits_answer_and_usage_report():
    r = get_provider("hermes").parse(0, data("hermes-0.19.0-success.stdout"), "")
    assert r.succeeded and r.output == "ECHO:38"
    assert r.usage["input_tokens"] == 11 and r.usage["api_calls"] == 1
    assert r.session_id == "20261128_171028_3be55a"
    assert r.cost_usd is None  # cost_status "unknown": the 0.0 is not a price


def test_hermes_failed_report_with_exit_0_fails():
    r = get_provider("hermes").parse(0, data("hermes-0.19.0-failed-exit0.stdout"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message == "API call failed after 3 retries: HTTP 500: stub failure"


def test_hermes_reports_priced_cost_and_failure_field():
    report = {"estimated_cost_usd": 0.02, "cost_status": "estimated", "session_id": "s", "failed": False}
    ok = get_provider("hermes").parse(0, f"answer\n{USAGE_MARKER}\n{json.dumps(report)}\n", "")
    assert ok.succeeded and ok.cost_usd == 0.02 and ok.session_id == "s"
    raised = {"failed": True, "failure": "No inference provider configured."}
    r = get_provider("hermes").parse(1, f"{USAGE_MARKER}\n{json.dumps(raised)}\n", "hermes -z: agent failed")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message == "No inference provider configured."


def test_hermes_answer_may_quote_the_marker():
    report = json.dumps({"failed": False, "completed": True})
    stdout = f"the marker is {USAGE_MARKER}\nbye\n{USAGE_MARKER}\n{report}\n"
    r = get_provider("hermes").parse(0, stdout, "")
    assert r.succeeded and r.output == f"the marker is {USAGE_MARKER}\nbye"


def test_hermes_without_usage_report_uses_the_exit_code():
    hermes = get_provider("hermes")
    not_found = hermes.parse(127, f"{USAGE_MARKER}\n", "hermes-wrapper: 1: hermes: not found\n")
    assert not not_found.succeeded and not_found.error_code == "nonzero_exit"
    assert "hermes: not found" in not_found.error_message
    empty_answer = hermes.parse(0, f"{USAGE_MARKER}\n", "")
    assert not empty_answer.succeeded and empty_answer.error_code == "provider_error"


# ── parse: OSA ───────────────────────────────────────────────────────────


def test_osa_parses_the_result_object():
    r = get_provider("osa").parse(0, data("osa-result.json"), "")
    assert r.succeeded and r.output == "note.txt says the launch is on Friday."
    assert r.session_id == "headless-1791507688355-efd495a19f59"
    assert r.cost_usd == pytest.approx(0.0012)
    assert r.usage["input_tokens"] == 64084


def test_osa_is_error_result_fails():
    r = get_provider("osa").parse(1, data("osa-is-error.json"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message.endswith("(fault: provider)")


def test_osa_legacy_error_object_fails():
    r = get_provider("osa").parse(1, data("osa-legacy-error.json"), "")
    assert not r.succeeded and r.error_code == "provider_error"
    assert r.error_message == "provider timeout" and r.session_id == "headless_42"


def test_osa_legacy_result_cost_is_not_the_run_cost():
    legacy = {"type": "result", "session_id": "headless_7", "content": "done", "model": "m", "cost": 4.2}
    r = get_provider("osa").parse(0, json.dumps(legacy), "")
    assert r.succeeded and r.output == "done" and r.cost_usd is None


# ── parse: custom ────────────────────────────────────────────────────────


def test_custom_parse_is_stdout_and_exit_code():
    custom = get_provider("custom")
    assert custom.parse(0, "raw output\n", "noise") == ParsedResult(succeeded=True, output="raw output\n")
    failed = custom.parse(3, "partial", "first\nlast words\n")
    assert not failed.succeeded and failed.output == "partial"
    assert failed.error_code == "nonzero_exit"
    assert "code 3" in failed.error_message and failed.error_message.endswith("last words")
    killed = custom.parse(None, "", "")
    assert not killed.succeeded and killed.error_code == "nonzero_exit" and "signal" in killed.error_message


# ── parse: robustness, every CLI ─────────────────────────────────────────

GOOD = {
    "claude-code": "claude-code-success.jsonl",
    "codex": "codex-success.jsonl",
    "pi": "pi-0.73.1-success.jsonl",
    "hermes": "hermes-0.19.0-success.stdout",
    "osa": "osa-result.json",
}
GARBAGE = "\n".join([
    "not json at all", "{broken json", "[1, 2, 3]", '"a string"', "null", "{}",
    '{"type": null}', '{"type": "result", "result": 42, "is_error": "yes", "usage": [1]}',
    '{"type": "message_end", "message": "nope"}', '{"type": "item.completed", "item": 7}',
    "\x00\x1b[31mcolour\x1b[0m", "🙂",
])


@pytest.mark.parametrize("name", CLI_PROVIDERS)
def test_garbage_lines_are_skipped(name):
    provider = get_provider(name)
    clean = provider.parse(0, data(GOOD[name]), "")
    if name == "hermes":
        answer, marker, report = data(GOOD[name]).rpartition(USAGE_MARKER)
        noisy = provider.parse(0, answer + marker + report, "")  # hermes answers are plain text
    else:
        noisy = provider.parse(0, GARBAGE + "\n" + data(GOOD[name]) + "\n" + "{trailing garbage", "")
    assert noisy == clean


@pytest.mark.parametrize("name", CLI_PROVIDERS)
def test_empty_output_fails(name):
    provider = get_provider(name)
    for exit_code, error_code in ((0, "provider_error"), (1, "nonzero_exit"), (None, "nonzero_exit")):
        r = provider.parse(exit_code, "", "")
        assert not r.succeeded and r.error_code == error_code and r.error_message
        assert r.output == ""


@pytest.mark.parametrize("name", ["claude-code", "codex", "pi", "osa"])
def test_garbage_only_never_raises_and_fails(name):
    for exit_code in (0, 1, None):
        r = get_provider(name).parse(exit_code, GARBAGE, "")
        assert not r.succeeded and r.error_code in ("provider_error", "nonzero_exit") and r.error_message


def test_hermes_text_without_report_is_the_answer():
    # hermes answers in plain text; the report can be lost if stdout was cut at the storage cap
    r = get_provider("hermes").parse(0, GARBAGE, "")
    assert r.succeeded and r.output == GARBAGE and r.usage is None
    assert not get_provider("hermes").parse(None, GARBAGE, "").succeeded


@pytest.mark.parametrize("name", CLI_PROVIDERS)
def test_signal_exit_fails_but_keeps_what_was_parsed(name):
    clean = get_provider(name).parse(0, data(GOOD[name]), "")
    killed = get_provider(name).parse(None, data(GOOD[name]), "Terminated\n")
    assert not killed.succeeded and killed.error_code == "nonzero_exit"
    assert "signal" in killed.error_message
    assert (killed.output, killed.usage, killed.session_id) == (clean.output, clean.usage, clean.session_id)


def test_stderr_in_messages_is_trimmed():
    huge = "x" * 10_000 + "\nthe real reason\n"
    r = get_provider("codex").parse(1, "", huge)
    assert len(r.error_message) <= 2000 and r.error_message.endswith("the real reason")


# ── the shell wrappers, run for real ─────────────────────────────────────


def custom_run(tmp_path, command, prompt=NASTY_PROMPT, **kw):
    inv = get_provider("custom").build(spec(command=command, prompt=prompt, **kw))
    return run_invocation(inv, tmp_path)


def test_custom_gets_prompt_byte_exact_on_stdin_and_in_file(tmp_path):
    command = 'cat > stdin.bin; cp "$AGENTRUNS_PROMPT_FILE" file.bin; printf %s "$AGENTRUNS_PROMPT_FILE" > path.txt'
    result = custom_run(tmp_path, command)
    assert result.returncode == 0, result.stderr
    expected = NASTY_PROMPT.encode("utf-8")
    assert (tmp_path / "stdin.bin").read_bytes() == expected
    assert (tmp_path / "file.bin").read_bytes() == expected
    prompt_file = Path((tmp_path / "path.txt").read_text())
    assert prompt_file.is_absolute() and not prompt_file.exists()  # removed afterwards


def test_custom_uses_the_drivers_prompt_file_as_it_is(tmp_path):
    """A driver that keeps a copy of stdin sets the variable to its path (ExecRequest.stdin_file_env):
    the command gets that file and stdin untouched, and the file is the driver's to remove."""
    inv = get_provider("custom").build(spec(command='cat > stdin.bin; printf %s "$AGENTRUNS_PROMPT_FILE"; echo "|$1"',
                                            settings=ProviderSettings(extra_args=("arg",))))
    assert inv.stdin_file_env == "AGENTRUNS_PROMPT_FILE"
    copy = tmp_path / "copy"
    copy.write_bytes(inv.stdin)
    result = run_invocation(dataclasses.replace(inv, env={**inv.env, "AGENTRUNS_PROMPT_FILE": str(copy)}), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{copy}|arg\n"
    assert (tmp_path / "stdin.bin").read_bytes() == inv.stdin and copy.read_bytes() == inv.stdin


def test_custom_env_cwd_and_positional_args(tmp_path):
    command = 'printf "%s|%s|%s|%s|%s" "$AGENTRUNS_RUN_ID" "$AGENTRUNS_MODEL" "$(pwd)" "$#" "$1"'
    result = custom_run(tmp_path, command, model="m-1", settings=ProviderSettings(extra_args=("one arg",)))
    assert result.stdout.decode() == f"run_123|m-1|{tmp_path}|1|one arg"
    # The prompt file is private to the device user.
    mode = custom_run(tmp_path, 'stat -c %a "$AGENTRUNS_PROMPT_FILE"').stdout.decode().strip()
    assert mode == "600"


def test_custom_prompt_file_in_tmpdir_and_the_umask_not_inherited(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    old = os.umask(0o027)
    try:
        result = run_invocation(get_provider("custom").build(spec(
            command='umask; printf "%s\\n" "$AGENTRUNS_PROMPT_FILE"; cmp - "$AGENTRUNS_PROMPT_FILE" && echo same')),
            tmp_path, {"TMPDIR": str(tmpdir)})
    finally:
        os.umask(old)
    mask, path, same = result.stdout.decode().split("\n", 2)
    # The file was private (mode 600) but the command keeps the caller's umask.
    assert int(mask, 8) == 0o027 and same == "same\n"
    assert path.startswith(f"{tmpdir}/agentruns-prompt.") and list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("planted", ["file", "dangling symlink"])
def test_custom_prompt_file_name_taken_falls_back_to_mktemp(tmp_path, planted):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    command = 'cat > stdin.bin; cp "$AGENTRUNS_PROMPT_FILE" file.bin; printf %s "$AGENTRUNS_PROMPT_FILE"'
    inv = get_provider("custom").build(spec(command=command))
    taken = tmpdir / inv.env["AGENTRUNS_PROMPT_FILE"]
    if planted == "file":
        taken.write_text("not yours")
    else:
        taken.symlink_to(tmp_path / "target")
    result = run_invocation(inv, tmp_path, {"TMPDIR": str(tmpdir)})
    assert result.returncode == 0, result.stderr
    expected = NASTY_PROMPT.encode()
    assert (tmp_path / "stdin.bin").read_bytes() == (tmp_path / "file.bin").read_bytes() == expected
    path = result.stdout.decode()
    assert path.startswith(str(tmpdir)) and path != str(taken) and not Path(path).exists()
    # Nothing written through the planted name, and it is left alone.
    assert not (tmp_path / "target").exists() and os.path.lexists(taken)
    if planted == "file":
        assert taken.read_text() == "not yours"


def test_custom_propagates_exit_code_and_cleans_up(tmp_path):
    command = 'echo "$AGENTRUNS_PROMPT_FILE"; echo oops >&2; exit 42'
    result = custom_run(tmp_path, command)
    assert result.returncode == 42
    assert not Path(result.stdout.decode().strip()).exists()
    parsed = get_provider("custom").parse(result.returncode, result.stdout.decode(), result.stderr.decode())
    assert parsed.error_code == "nonzero_exit" and parsed.error_message.endswith("oops")


def test_custom_uses_the_configured_shell(tmp_path):
    bash = "/bin/bash"
    if not Path(bash).exists():
        pytest.skip("no bash")
    result = custom_run(tmp_path, 'echo "${BASH_VERSION:+bash}"', settings=ProviderSettings(executable=bash))
    assert result.stdout.decode().strip() == "bash"


def test_custom_prompt_file_removed_on_term(tmp_path):
    inv = get_provider("custom").build(spec(command='echo "$AGENTRUNS_PROMPT_FILE"; exec sleep 30'))
    proc = subprocess.Popen(inv.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **inv.env}, cwd=tmp_path, start_new_session=True)
    proc.stdin.write(inv.stdin)
    proc.stdin.close()
    prompt_file = Path(proc.stdout.readline().decode().strip())
    assert prompt_file.read_bytes() == inv.stdin
    os.killpg(proc.pid, signal.SIGTERM)  # what the driver does on timeout or cancel
    assert proc.wait(timeout=10) == 143
    assert not prompt_file.exists()


FAKE_HERMES = textwrap.dedent("""\
    #!{python}
    # Stands in for hermes 0.19: records its argv, writes a usage report, prints an answer.
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_HERMES_ARGV"], "w", encoding="utf-8") as f:
        json.dump(args, f)
    prompt = next(a for a in args if a.startswith("--oneshot="))[len("--oneshot="):]
    usage_path = args[args.index("--usage-file") + 1]
    mode = os.environ.get("FAKE_HERMES_MODE", "ok")
    if mode == "preflight":
        sys.stderr.write("hermes: error: bad flag\\n")
        sys.exit(2)
    failed = mode == "fail"
    with open(usage_path, "w", encoding="utf-8") as f:
        json.dump({{"input_tokens": 7, "output_tokens": 2, "api_calls": 1, "session_id": "sess-1",
                   "completed": not failed, "failed": failed, "cost_status": "estimated",
                   "estimated_cost_usd": 0.001}}, f, indent=2)
    print("HTTP 500: upstream down" if failed else "answer for " + str(len(prompt.encode())) + " bytes")
    sys.exit(int(os.environ.get("FAKE_HERMES_EXIT", "0")))
""")


@pytest.fixture
def fake_hermes(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "hermes"
    script.write_text(FAKE_HERMES.format(python=sys.executable))
    script.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmpdir),
           "FAKE_HERMES_ARGV": str(tmp_path / "argv.json")}
    return tmp_path, env, tmpdir


def run_hermes(fake_hermes, prompt=NASTY_PROMPT, mode="ok", exit_code=0, model="m"):
    workdir, env, tmpdir = fake_hermes
    inv = get_provider("hermes").build(spec(prompt=prompt, model=model))
    env = {**env, "FAKE_HERMES_MODE": mode, "FAKE_HERMES_EXIT": str(exit_code)}
    result = run_invocation(inv, workdir, env)
    argv = json.loads((workdir / "argv.json").read_text(encoding="utf-8"))
    return result, argv, tmpdir


def test_hermes_wrapper_passes_prompt_byte_exact_as_one_argument(fake_hermes):
    prompt = "-p " + NASTY_PROMPT  # a leading dash must not read as a flag
    result, argv, tmpdir = run_hermes(fake_hermes, prompt=prompt)
    assert result.returncode == 0, result.stderr
    assert argv[:3] == ["--yolo", "-m", "m"]
    assert argv[3] == "--oneshot=" + prompt  # trailing newlines kept, nothing expanded
    assert argv[4] == "--usage-file" and len(argv) == 6
    assert list(tmpdir.iterdir()) == []  # the usage file was removed
    parsed = get_provider("hermes").parse(0, result.stdout.decode(), result.stderr.decode())
    assert parsed.succeeded and parsed.output == f"answer for {len(prompt.encode())} bytes"
    assert parsed.usage["input_tokens"] == 7 and parsed.session_id == "sess-1"
    assert parsed.cost_usd == 0.001


def test_hermes_wrapper_failed_run_with_exit_0(fake_hermes):
    result, _, tmpdir = run_hermes(fake_hermes, mode="fail")
    assert result.returncode == 0
    parsed = get_provider("hermes").parse(result.returncode, result.stdout.decode(), result.stderr.decode())
    assert not parsed.succeeded and parsed.error_code == "provider_error"
    assert parsed.error_message == "HTTP 500: upstream down"
    assert list(tmpdir.iterdir()) == []


def test_hermes_wrapper_propagates_exit_code(fake_hermes):
    result, _, tmpdir = run_hermes(fake_hermes, mode="preflight")
    assert result.returncode == 2
    parsed = get_provider("hermes").parse(result.returncode, result.stdout.decode(), result.stderr.decode())
    assert not parsed.succeeded and parsed.usage is None
    assert parsed.error_message.endswith("hermes: error: bad flag")
    assert list(tmpdir.iterdir()) == []
    result, _, _ = run_hermes(fake_hermes, exit_code=3)
    assert result.returncode == 3


def test_hermes_wrapper_large_prompt_within_the_limit(fake_hermes):
    prompt = "é" * (MAX_PROMPT_BYTES // 2)  # MAX_PROMPT_BYTES bytes of UTF-8
    assert len(prompt.encode()) == MAX_PROMPT_BYTES
    result, argv, _ = run_hermes(fake_hermes, prompt=prompt, model=None)
    assert result.returncode == 0, result.stderr[-500:]
    assert argv[1] == "--oneshot=" + prompt


def test_hermes_wrapper_usage_file_removed_on_term(fake_hermes):
    workdir, env, tmpdir = fake_hermes
    slow = workdir / "bin" / "hermes"
    slow.write_text(f"#!{sys.executable}\nimport time\nprint('started', flush=True)\ntime.sleep(30)\n")
    inv = get_provider("hermes").build(spec())
    proc = subprocess.Popen(inv.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env, **inv.env}, cwd=workdir, start_new_session=True)
    proc.stdin.write(inv.stdin)
    proc.stdin.close()
    assert proc.stdout.readline() == b"started\n"
    assert len(list(tmpdir.iterdir())) == 1
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    deadline = time.monotonic() + 5
    while list(tmpdir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmpdir.iterdir()) == []
