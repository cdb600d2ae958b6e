"""The Go SDK (clients/go): vet, gofmt and its unit tests, then its end-to-end tests and README example
against a live API, worker and beat, with a sandbox on the test sshd.

Go builds with the standard library only and no module proxy; its build cache lives in the system's temp
directory (not $HOME), so later sessions reuse the compiled packages.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from agentruns import vocabulary
from agentruns.client import Client
from tests.conftest import make_key

GO_MODULE = Path(__file__).resolve().parents[1] / "clients" / "go"
GO_CACHE = Path(tempfile.gettempdir()) / "agentruns-go"
# Every e2e test of the module, and the README's example: each must be seen passing, not skipped.
E2E_TESTS = ("TestE2ERunACustomCommandAndReadItsOutput", "TestE2EStreamLiveOutputAndResumeAfterACut",
             "TestE2EListWithAMetadataFilterAcrossPages", "TestE2ECancelARunningRun",
             "TestE2EErrorsCarryTheirTypeAndRequestID", "TestE2EACreateRetriedAfterADroppedAnswerMakesOneRun",
             "TestE2EDevices", "ExampleAgentRunsService_Run")
EXAMPLE_SANDBOX = "box-1"  # the sandbox the README's example names


def go(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the go tool in the module, offline, with a build cache that does not depend on $HOME."""
    binary = shutil.which("go")
    if binary is None:
        pytest.fail("the Go toolchain is missing: apt-get install golang-go (scripts/install-system-deps.sh)",
                    pytrace=False)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRUNS_", "GO"))}
    base.update(GOCACHE=str(GO_CACHE / "build"), GOPATH=str(GO_CACHE / "path"), GOPROXY="off", GOFLAGS="",
                GOTOOLCHAIN="local", GOTELEMETRY="off", GO111MODULE="on")
    proc = subprocess.run([binary, *args], cwd=GO_MODULE, env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def assert_ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.unit
def test_go_sdk_is_vetted_formatted_and_its_unit_tests_pass():
    assert_ok(go("vet", "-tags", "e2e", "./..."))  # the e2e files too: they must compile
    gofmt = shutil.which("gofmt") or str(Path(shutil.which("go") or "go").resolve().with_name("gofmt"))
    unformatted = subprocess.run([gofmt, "-l", "."], cwd=GO_MODULE, capture_output=True, text=True, check=True)
    assert unformatted.stdout == "", f"not gofmt-clean:\n{unformatted.stdout}"
    out = assert_ok(go("test", "-count=1", "-v", "./..."))
    assert "--- PASS: TestACreateIsResentUnderOneIdempotencyKeyAndRequestIDHonouringRetryAfter" in out
    assert "--- FAIL" not in out and "--- SKIP" not in out


@pytest.mark.unit
def test_go_vocabulary_matches_python():
    """The Go constants are written out by hand: held here to agentruns/vocabulary.py."""
    source = (GO_MODULE / "vocabulary.go").read_text()
    consts = dict(re.findall(r'^\t(\w+)\s*=\s*"([^"]*)"$', source, re.M))

    def values(prefix: str) -> set[str]:
        return {v for k, v in consts.items() if k.startswith(prefix)}

    assert values("Status") == set(vocabulary.STATUSES)
    assert values("Event") == set(vocabulary.EVENT_TYPES)
    assert values("Provider") == set(vocabulary.PROVIDERS)
    assert values("Kind") == set(vocabulary.KINDS)
    terminal = re.search(r"func IsTerminal\(status string\) bool \{\n\treturn (.+)\n", source)
    assert terminal is not None
    assert {consts[name] for name in re.findall(r"Status\w+", terminal.group(1))} == vocabulary.TERMINAL


@pytest.fixture()
def go_tenant(app, live_server, sshd):
    """A fresh tenant on the live server with the README's sandbox on the test sshd (several runs at a time,
    so the e2e tests' runs do not queue behind each other)."""
    _, key = make_key()
    workdir = f"/tmp/agentruns-go-e2e-{uuid.uuid4().hex[:8]}"
    sshd.run_as_user(f"mkdir -p {workdir}")
    ssh = {"host": sshd.host, "port": sshd.port, "username": sshd.username, "private_key": sshd.private_key,
           "host_key": sshd.host_key}
    with Client(live_server, key) as client:
        client.devices.create(id=EXAMPLE_SANDBOX, kind="sandbox", driver="ssh", default_cwd=workdir,
                              max_concurrent_runs=4, **ssh)
    return {"AGENTRUNS_API_URL": live_server, "AGENTRUNS_API_KEY": key, "AGENTRUNS_E2E_DEVICE": EXAMPLE_SANDBOX,
            "AGENTRUNS_E2E_WORKDIR": workdir, "AGENTRUNS_E2E_SSH": json.dumps(ssh)}


@pytest.mark.e2e
def test_go_sdk_end_to_end(go_tenant):
    proc = go("test", "-tags", "e2e", "-count=1", "-v", "-run", "^(TestE2E|Example)", "./...", env=go_tenant)
    out = assert_ok(proc)
    passed = set(re.findall(r"^\s*--- PASS: (\w+)", out, re.M))
    assert set(E2E_TESTS) <= passed, f"did not pass: {sorted(set(E2E_TESTS) - passed)}\n{out}"
