"""The genuine agent CLIs end to end, offline: API -> worker -> SSH -> real CLI -> parser -> stored run.

Claude Code, Codex, pi and Hermes are installed once at pinned versions (tests/real_clis.py, cached
outside the repository) and run on the test sshd as its plain device user. Each talks to a stand-in
of its model API (tests/standins) on loopback, pointed there only through the device's per-provider
settings (executable, extra_args, env): the same feature an operator uses for a real fleet.

For speed, every run of every CLI is submitted at once by one module fixture and awaited together;
the tests then assert on the stored runs and on the stand-in's request log. A CLI that cannot be
installed fails its tests with the installer's message; AGENTRUNS_SKIP_REAL_CLIS=1 skips the module.
"""
from __future__ import annotations

import concurrent.futures
import shlex
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

import pytest

from providers.hermes import MAX_PROMPT_BYTES
from tests import real_clis
from tests.conftest import make_key, wait_run
from tests.standins import answer_text, done_text, error_text, start_standin

pytestmark = [pytest.mark.real_cli, pytest.mark.e2e]

if real_clis.skip_requested():
    pytest.skip(f"{real_clis.SKIP_ENV}=1: the genuine agent CLIs are not tested", allow_module_level=True)

CLIS = ["claude-code", "codex", "pi", "hermes"]
STANDIN_KEY = "sk-standin-4f1c"  # what each CLI must send back as its credential
RUN_TIMEOUT = 90
# Quotes, command substitutions (that would leave a file behind if a shell ever ran them), a
# backslash, glob characters, newlines, a tab and non-ASCII; ends in text so no CLI trims it.
TRICKY = ("He said \"hi\" & 'bye'; $(touch {canary}) `touch {canary}` $HOME ${{PATH}} \\ * ?\n"
          "\tsecond line: ünïcødé €✓ 日本語 🚀\n\nlast line {marker}")
BIG_BYTES = 150 * 1024
HERMES_FITS_BYTES = 110 * 1024  # under providers.hermes.MAX_PROMPT_BYTES: the argv route still works


@dataclass(frozen=True)
class Cli:
    """What each CLI is expected to show: its API path, its usage keys, whether it prices the run."""

    name: str
    api_path: str
    usage_keys: tuple[str, str]  # (input tokens, output tokens) in the stored usage
    prices: bool  # cost_usd filled
    relays_error_text: bool  # the stand-in's error message appears in the stored error
    auth_header: tuple[str, str]


EXPECT = {
    "claude-code": Cli("claude-code", "/v1/messages", ("input_tokens", "output_tokens"), True, True,
                       ("x-api-key", STANDIN_KEY)),
    # Codex words every 5xx its own way ("We're currently experiencing high demand...").
    "codex": Cli("codex", "/v1/responses", ("input_tokens", "output_tokens"), False, False,
                 ("authorization", f"Bearer {STANDIN_KEY}")),
    "pi": Cli("pi", "/v1/chat/completions", ("input", "output"), True, True,
              ("authorization", f"Bearer {STANDIN_KEY}")),
    # Hermes prices a custom endpoint as cost_status "unknown": no cost_usd.
    "hermes": Cli("hermes", "/v1/chat/completions", ("input_tokens", "output_tokens"), False, True,
                  ("authorization", f"Bearer {STANDIN_KEY}")),
}
PI_PRICE = {"input": 3.0, "output": 15.0, "cacheRead": 0.3, "cacheWrite": 3.75}  # USD per million tokens


# --- per-device provider settings: how each CLI is pointed at the stand-in -------------------------

def provider_settings(cli: str, executable: str, home: str, url: str) -> tuple[dict, dict[str, str]]:
    """(the device's `providers` entry, config files to write on the device) for one CLI."""
    if cli == "claude-code":
        return {"executable": executable, "env": {
            "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": STANDIN_KEY,
            "CLAUDE_CONFIG_DIR": f"{home}/claude",  # keep the device user's own ~/.claude out of it
            "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "1",  # the default retries a 500 for over a minute
        }}, {}
    if cli == "codex":
        # The provider travels as -c overrides in extra_args (OPENAI_BASE_URL is ignored by Codex);
        # its key comes from the env named by env_key, so no secret is on a command line.
        provider = (f'{{name="Stand-in", base_url="{url}/v1", env_key="STANDIN_API_KEY", wire_api="responses", '
                    "supports_websockets=false, request_max_retries=0, stream_max_retries=0}")
        return {"executable": executable,
                "extra_args": ["-c", 'model_provider="standin"', "-c", f"model_providers.standin={provider}"],
                "env": {"CODEX_HOME": f"{home}/codex", "STANDIN_API_KEY": STANDIN_KEY}}, {
            f"{home}/codex/config.toml": 'model = "standin-default"\n'}
    if cli == "pi":
        models = [{"id": m, "name": m, "reasoning": False, "input": ["text"], "contextWindow": 200000,
                   "maxTokens": 8192, "cost": PI_PRICE} for m in ("standin-default", model_for("pi"))]
        return {"executable": executable,
                "env": {"PI_CODING_AGENT_DIR": f"{home}/pi", "PI_OFFLINE": "1"}}, {
            f"{home}/pi/models.json": _json({"providers": {"standin": {
                "baseUrl": f"{url}/v1", "api": "openai-completions", "apiKey": STANDIN_KEY, "models": models}}}),
            # pi retries a failed model call 3 times (~20 s) by default.
            f"{home}/pi/settings.json": _json({"retry": {"enabled": False}}),
        }
    if cli == "hermes":
        config = (f"model:\n  provider: custom\n  base_url: {url}/v1\n  default: standin-default\n"
                  f"  api_key: {STANDIN_KEY}\n"
                  "agent:\n  api_max_retries: 1\n"  # default 3: a 500 costs ~12 s
                  # A read-only install would otherwise try `pip install edge-tts` on every run (~4 s).
                  "security:\n  allow_lazy_installs: false\n")
        return {"executable": executable, "env": {"HERMES_HOME": f"{home}/hermes"}}, {
            f"{home}/hermes/config.yaml": config}
    raise AssertionError(cli)


def model_for(cli: str) -> str:
    """The model each run asks for: not any config's default, so the log proves `model` was passed."""
    return f"standin-{cli}-model"


def _json(value) -> str:
    import json

    return json.dumps(value, indent=1)


# --- the fleet: stand-in, installs, one device per CLI, every run submitted at once -----------------

@dataclass
class Outcome:
    cli: str
    case: str
    marker: str
    prompt: str
    cwd: str
    created: dict | None = None  # the POST response body (data or error)
    status_code: int = 0
    run: dict | None = None


@pytest.fixture(scope="module")
def standin():
    server = start_standin()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def installs():
    """name -> Installed or the InstallError, installed concurrently (cold: about 40 s, warm: ~0)."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(CLIS)) as pool:
        futures = {name: pool.submit(real_clis.ensure, name) for name in CLIS}
    result = {}
    for name, future in futures.items():
        try:
            result[name] = future.result()
        except Exception as exc:  # any failure must surface in that CLI's tests, not vanish
            result[name] = exc
    cold = [f"{i.pin.key} {i.seconds:.0f}s" for i in result.values() if not isinstance(i, Exception) and i.seconds]
    if cold:
        print(f"\nreal CLIs installed in {time.monotonic() - started:.0f} s: {', '.join(cold)}")
    return result


def installed(installs, cli: str):
    got = installs[cli]
    if isinstance(got, Exception):
        pytest.fail(f"{cli}: could not install the pinned CLI ({type(got).__name__}): {got}\n"
                    f"(set {real_clis.SKIP_ENV}=1 to skip the genuine-CLI tests)", pytrace=False)
    return got


@pytest.fixture(scope="module")
def fleet(app, worker, sshd, standin, installs):
    """Register one ssh device per installed CLI, submit every case for all of them, await them all."""
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_key()[1]}"}
    token = uuid.uuid4().hex[:8]
    home = sshd.run_as_user('printf %s "$HOME"').stdout.strip()
    confdir = f"{home}/.agentruns-real-clis-{token}"
    workdir = f"/tmp/agentruns-real-clis-{token}"
    ready = [cli for cli in CLIS if not isinstance(installs[cli], Exception)]
    outcomes: dict[tuple[str, str], Outcome] = {}
    for cli in ready:
        settings, files = provider_settings(cli, installs[cli].executable, f"{confdir}/{cli}", standin.url)
        write_files(sshd, files)
        body = {"id": f"real-{cli}", "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
                "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key,
                "default_cwd": workdir, "max_concurrent_runs": 8, "providers": {cli: settings}}
        resp = client.post("/api/v1/devices", json=body, headers=auth)
        assert resp.status_code == 201, resp.get_json()
        outcomes.update({(cli, o.case): o for o in plan(cli, workdir, token)})
    checked = sshd.run_as_user("mkdir -p " + " ".join(shlex.quote(o.cwd) for o in outcomes.values()))
    assert checked.returncode == 0, checked.stderr

    settings_before = app.config["SETTINGS"]  # 150 KiB prompts exceed the default 100,000-character cap
    app.config["SETTINGS"] = replace(settings_before, max_prompt_chars=300_000)
    try:
        # The error runs go first, on their own: "fails within 15 s" should time the CLI's retry
        # policy, not twenty CLIs sharing two cores.
        errors = [o for o in outcomes.values() if o.case == "error"]
        submit_and_wait(client, auth, errors)
        submit_and_wait(client, auth, [o for o in outcomes.values() if o.case != "error"])
    finally:
        app.config["SETTINGS"] = settings_before
    yield {"outcomes": outcomes, "sshd": sshd, "standin": standin, "workdir": workdir, "client": client,
           "auth": auth}
    sshd.run_as_user(f"rm -rf {shlex.quote(confdir)} {shlex.quote(workdir)}")


def submit_and_wait(client, auth, wave: list[Outcome]) -> None:
    """Create every run of the wave, then wait for each; prints how long each waited and ran."""
    started = time.monotonic()
    for o in wave:
        resp = client.post("/api/v1/agent-runs", headers=auth, json={
            "provider": o.cli, "computer_id": f"real-{o.cli}", "prompt": o.prompt, "model": model_for(o.cli),
            "cwd": o.cwd, "timeout": RUN_TIMEOUT})
        o.status_code, o.created = resp.status_code, resp.get_json()
    for o in wave:
        if o.status_code == 201:
            assert o.created is not None, f"{o.cli} {o.case}: a 201 without a JSON body"
            o.run = wait_run(client, auth, o.created["data"]["id"], RUN_TIMEOUT + 30)
    print(f"\n{sum(o.run is not None for o in wave)} genuine-CLI runs finished in {time.monotonic() - started:.1f} s")
    for o in wave:
        if o.run and o.run.get("started_at"):
            waited, ran = seconds(o.run, "created_at", "started_at"), seconds(o.run, "started_at", "finished_at")
            print(f"  {o.cli:12} {o.case:7} {o.run['status']:9} waited {waited:4.1f} s, ran {ran:4.1f} s")


def plan(cli: str, workdir: str, token: str) -> list[Outcome]:
    """The runs one CLI gets: plain, tool, error, tricky, big (and for Hermes one that still fits)."""
    def outcome(case: str, prompt_of) -> Outcome:
        marker = f"[[id:{cli}-{case}-{token}]]"
        return Outcome(cli, case, marker, prompt_of(marker), f"{workdir}/{cli}-{case}")

    cases = [
        outcome("plain", lambda m: f"Answer briefly. {m}"),
        outcome("tool", lambda m: f"Create the file please. {m} [[tool:printf 'made by {cli}' > tool-output.txt]]"),
        outcome("error", lambda m: f"This will fail. {m} [[error:500]]"),
        outcome("tricky", lambda m: TRICKY.format(canary=f"{workdir}/canary-{cli}", marker=m)),
        outcome("big", lambda m: big_prompt(m, BIG_BYTES)),
    ]
    if cli == "hermes":
        cases.append(outcome("fits", lambda m: big_prompt(m, HERMES_FITS_BYTES)))
    return cases


def big_prompt(marker: str, size: int) -> str:
    """Exactly `size` UTF-8 bytes of numbered lines, the marker at the start, a unique tail at the end."""
    head, tail = f"Summarise these lines (ünïcødé). {marker}\n", "\nEND-OF-BIG-PROMPT"
    room = size - len(head.encode()) - len(tail)
    line = "line {:06d}: the quick brown fox jumps over the lazy dog\n"
    body = "".join(line.format(n) for n in range(room // len(line.format(0)) + 1))[:room]
    return head + body + tail


def write_files(sshd, files: dict[str, str]) -> None:
    """Write config files as the device user (private to them), through their own shell."""
    for path, text in files.items():
        folder = path.rsplit("/", 1)[0]
        cmd = f"umask 077 && mkdir -p {shlex.quote(folder)} && printf %s {shlex.quote(text)} > {shlex.quote(path)}"
        done = sshd.run_as_user(cmd)
        assert done.returncode == 0, done.stderr


def get(fleet, installs, cli: str, case: str) -> Outcome:
    installed(installs, cli)
    return fleet["outcomes"][(cli, case)]


def finished(o: Outcome) -> dict:
    assert o.status_code == 201, o.created
    assert o.run is not None
    return o.run


def seconds(run: dict, start: str, end: str) -> float:
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(run[end]) - parse(run[start])).total_seconds()


def describe(run: dict) -> str:
    keep = ("status", "error", "exit_code", "output", "usage", "cost_usd", "session_id")
    return repr({k: run.get(k) for k in keep}) + f"\nstderr: {(run.get('stderr') or '')[-1500:]}" \
        f"\nstdout: {(run.get('stdout') or '')[-1500:]}"


# --- the tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cli", CLIS)
def test_plain_answer(fleet, installs, cli):
    o = get(fleet, installs, cli, "plain")
    run = finished(o)
    token = o.marker[len("[[id:"):-2]
    assert run["status"] == "succeeded", describe(run)
    assert run["output"] == answer_text(token), describe(run)
    assert run["error"] is None
    assert run["session_id"], describe(run)
    expect = EXPECT[cli]
    tokens_in, tokens_out = expect.usage_keys
    assert run["usage"][tokens_in] >= 1200 and run["usage"][tokens_out] >= 17, run["usage"]
    if expect.prices:
        assert run["cost_usd"] and run["cost_usd"] > 0, describe(run)
    else:
        assert run["cost_usd"] is None
    if cli == "pi":  # pi prices from models.json: exactly the stand-in's tokens at the configured rates
        assert run["cost_usd"] == pytest.approx((1200 * PI_PRICE["input"] + 17 * PI_PRICE["output"]) / 1e6)
    # The device's secret provider env reached the CLI: it presented the stand-in's key.
    header, value = expect.auth_header
    calls = fleet["standin"].find(o.marker, expect.api_path)
    assert calls and all(c.headers.get(header) == value for c in calls), [c.headers for c in calls]


@pytest.mark.parametrize("cli", CLIS)
def test_tool_round_trip_runs_in_the_run_cwd(fleet, installs, cli):
    o = get(fleet, installs, cli, "tool")
    run = finished(o)
    token = o.marker[len("[[id:"):-2]
    assert run["status"] == "succeeded", describe(run)
    assert run["output"] == done_text(token), describe(run)
    made = fleet["sshd"].run_as_user(f"cat {shlex.quote(o.cwd)}/tool-output.txt")
    assert made.returncode == 0 and made.stdout == f"made by {cli}", (made, describe(run))
    calls = fleet["standin"].find(o.marker, EXPECT[cli].api_path)
    assert len(calls) >= 2, [c.path for c in calls]  # the tool call, then the answer after its result


@pytest.mark.parametrize("cli", CLIS)
def test_model_error_fails_fast_with_the_clis_message(fleet, installs, cli):
    o = get(fleet, installs, cli, "error")
    run = finished(o)
    token = o.marker[len("[[id:"):-2]
    assert run["status"] == "failed", describe(run)
    assert run["error"]["code"] == "provider_error", describe(run)
    message = run["error"]["message"]
    # The CLI's own words: the stored message comes from what the CLI printed.
    assert message and (message[:60] in run["stdout"] or message[:60] in run["stderr"]), describe(run)
    if EXPECT[cli].relays_error_text:
        assert error_text(500, token) in message, describe(run)
    assert seconds(run, "created_at", "finished_at") < 15, describe(run)  # retries turned down
    assert fleet["standin"].find(o.marker, EXPECT[cli].api_path), "the model was never called"


@pytest.mark.parametrize("cli", CLIS)
def test_model_reaches_the_endpoint(fleet, installs, cli):
    o = get(fleet, installs, cli, "plain")
    finished(o)
    calls = fleet["standin"].find(o.marker, EXPECT[cli].api_path)
    assert calls and {c.body.get("model") for c in calls} == {model_for(cli)}, [c.body.get("model") for c in calls]


@pytest.mark.parametrize("cli", CLIS)
def test_tricky_prompt_arrives_intact(fleet, installs, cli):
    o = get(fleet, installs, cli, "tricky")
    run = finished(o)
    assert run["status"] == "succeeded", describe(run)
    assert run["output"] == answer_text(o.marker[len("[[id:"):-2]), describe(run)
    assert fleet["standin"].find(o.prompt, EXPECT[cli].api_path), "the exact prompt never reached the model"
    canary = fleet["sshd"].run_as_user(f"test -e {shlex.quote(fleet['workdir'])}/canary-{cli}")
    assert canary.returncode != 0, "a shell expanded the prompt on the device"


@pytest.mark.parametrize("cli", CLIS)
def test_150_kib_prompt(fleet, installs, cli):
    o = get(fleet, installs, cli, "big")
    assert len(o.prompt.encode()) == BIG_BYTES
    if cli == "hermes":
        # Hermes 0.19.0 takes its prompt only as one argv string (capped by the kernel): the API says
        # so at creation instead of failing on the device.
        assert o.status_code == 422, o.created
        assert o.created["error"]["code"] == "validation_error"
        assert f"at most {MAX_PROMPT_BYTES} bytes" in o.created["error"]["message"], o.created
        return
    run = finished(o)
    assert run["status"] == "succeeded", describe(run)
    assert run["output"] == answer_text(o.marker[len("[[id:"):-2]), describe(run)
    assert fleet["standin"].find(o.prompt, EXPECT[cli].api_path), "the 150 KiB prompt did not arrive whole"


def test_hermes_prompt_under_its_limit_goes_through_argv(fleet, installs):
    o = get(fleet, installs, "hermes", "fits")
    run = finished(o)
    assert len(o.prompt.encode()) == HERMES_FITS_BYTES < MAX_PROMPT_BYTES
    assert run["status"] == "succeeded", describe(run)
    assert fleet["standin"].find(o.prompt, EXPECT["hermes"].api_path), "the prompt did not arrive whole"


@pytest.mark.parametrize("cli", CLIS)
def test_provider_env_is_write_only(fleet, installs, cli):
    installed(installs, cli)
    resp = fleet["client"].get(f"/api/v1/devices/real-{cli}", headers=fleet["auth"])
    assert resp.status_code == 200
    shown = resp.get_json()["data"]["providers"][cli]
    assert "env" not in shown and shown["env_names"], shown
    assert STANDIN_KEY not in resp.get_data(as_text=True)
