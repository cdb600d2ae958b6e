"""Each provider end to end through a stand-in executable on the SSH test device.

The stand-in records its argv and stdin and prints output of the shape the real CLI prints
(tests/data/providers): this checks the whole path (per-device executable setting -> argv over SSH
-> stdin -> parser -> stored run). tests/test_real_clis.py runs the genuine CLIs.
"""
from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest

from tests.conftest import wait_run
from tests.test_e2e_runs import create

pytestmark = pytest.mark.e2e
SAMPLES = Path(__file__).parent / "data" / "providers"
MARKER = "__AGENTRUNS_HERMES_USAGE_5d1c9a7e__"

CASES = {
    # provider: (sample file, expected output, expected session id)
    "claude-code": ("claude-code-success.jsonl", "The directory holds one file: a.txt", True),
    "codex": ("codex-success.jsonl", "The directory holds one file: a.txt", True),
    "pi": ("pi-0.73.1-success.jsonl", "ECHO:10", True),
    "osa": ("osa-result.json", "note.txt says the launch is on Friday.", True),
    "hermes": ("hermes-0.19.0-success.stdout", "ECHO:38", True),
}


def standin_script(provider: str, dir_: str) -> str:
    sample = (SAMPLES / CASES[provider][0]).read_text()
    record = f'printf "%s\\n" "$@" > {dir_}/{provider}.argv; cat > {dir_}/{provider}.stdin\n'
    if provider != "hermes":
        return f"#!/bin/sh\n{record}cat <<'SAMPLE_EOF'\n{sample}SAMPLE_EOF\n"
    answer, _, usage = sample.partition(MARKER + "\n")
    # Hermes takes the prompt as --oneshot=... and writes its usage report to --usage-file F.
    return ("#!/bin/sh\n"
            f'printf "%s\\n" "$@" > {dir_}/hermes.argv\n'
            'while [ $# -gt 0 ]; do\n'
            '  case "$1" in --oneshot=*) printf "%s" "${1#--oneshot=}" > ' + f'{dir_}/hermes.stdin;;\n'
            '  --usage-file) shift; uf="$1";; esac; shift\ndone\n'
            f"cat > \"$uf\" <<'USAGE_EOF'\n{usage}USAGE_EOF\n"
            f"printf '%s' {shlex.quote(answer)}\n")


@pytest.fixture()
def standin_device(client, auth, sshd):
    bindir = f"/tmp/agentruns-standins-{uuid.uuid4().hex[:8]}"
    sshd.run_as_user(f"mkdir -p {bindir}/work")
    providers = {}
    for provider in CASES:
        path = f"{bindir}/{provider}"
        script = standin_script(provider, bindir)
        result = sshd.run_as_user(f"cat > {path} <<'SCRIPT_EOF'\n{script}SCRIPT_EOF\nchmod +x {path}")
        assert result.returncode == 0, result.stderr
        providers[provider] = {"executable": path}
    resp = client.post("/api/v1/devices", headers=auth, json={
        "id": "standins", "kind": "computer", "driver": "ssh", "host": sshd.host, "port": sshd.port,
        "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key,
        "default_cwd": f"{bindir}/work", "max_concurrent_runs": 5, "providers": providers})
    assert resp.status_code == 201, resp.get_json()
    return bindir


def test_every_provider_through_a_standin(worker, client, auth, sshd, standin_device):
    prompt = "Summarise 'the' \"repo\" $(whoami) `id`\nsecond line ünï"
    runs = {p: create(client, auth, provider=p, prompt=prompt, computer_id="standins", model="m-1")
            for p in CASES}
    for provider, run in runs.items():
        done = wait_run(client, auth, run["id"], 60)
        expected_output = CASES[provider][1]
        assert done["status"] == "succeeded", (provider, done)
        assert done["output"] == expected_output, provider
        assert done["session_id"], provider
        argv = sshd.run_as_user(f"cat {standin_device}/{provider}.argv").stdout.splitlines()
        assert "m-1" in argv or "--model=m-1" in argv, (provider, argv)
        received = sshd.run_as_user(f"cat {standin_device}/{provider}.stdin").stdout
        assert received == prompt, provider
