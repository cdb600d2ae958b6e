"""The TypeScript SDK in clients/typescript: its unit tests (node's test runner on a fake fetch), its
generated types against the server's OpenAPI spec, its end-to-end tests against a live API, worker and
sshd, and its npm tarball installed into an empty folder running the README's example.

npm dependencies are installed with `npm ci` only when package-lock.json changed since the last install
(a stamp in node_modules), so a warm run costs no npm time.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from agentruns import vocabulary

SDK = Path(__file__).resolve().parent.parent / "clients" / "typescript"
TSC = SDK / "node_modules" / "typescript" / "bin" / "tsc"
INSTALL_STAMP = SDK / "node_modules" / ".installed-lock-sha256"
EXAMPLE = SDK / "examples" / "quickstart.mjs"
NODE = shutil.which("node")
NPM = shutil.which("npm")


def run(argv: list[str], *, cwd: Path = SDK, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a command; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}",
                    pytrace=False)
    return proc


def node_tests(folder: Path, env: dict[str, str] | None = None) -> str:
    """Run node's test runner on a folder of compiled tests; its output. Fails unless it ran tests and all
    passed. Files are listed (node 18 to 20 take a folder, 21+ a glob) and the reporter named (its default
    changed too), so any node from 18 on reads it alike."""
    assert NODE is not None
    files = sorted(str(f) for f in folder.glob("*.test.js"))
    assert files, f"no compiled tests in {folder}"
    out = run([NODE, "--test", "--test-reporter=tap", *files], env=env).stdout
    counts = dict(re.findall(r"^# (pass|fail|cancelled) (\d+)$", out, re.M))
    assert counts.keys() == {"pass", "fail", "cancelled"}, out[-3000:]
    assert int(counts["pass"]) > 0 and counts["fail"] == counts["cancelled"] == "0", out[-3000:]
    return out


def install_dependencies() -> None:
    """`npm ci` unless node_modules already holds exactly what package-lock.json pins."""
    lock_hash = hashlib.sha256((SDK / "package-lock.json").read_bytes()).hexdigest()
    if INSTALL_STAMP.exists() and INSTALL_STAMP.read_text() == lock_hash:
        return
    assert NPM is not None
    run([NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"])
    INSTALL_STAMP.write_text(lock_hash)


@pytest.fixture(scope="module")
def compiled() -> Path:
    """Dependencies installed; the SDK and its tests type-checked (strict) and compiled into build/."""
    if NODE is None or NPM is None:
        pytest.fail("node and npm are needed (scripts/install-system-deps.sh installs them)", pytrace=False)
    install_dependencies()
    shutil.rmtree(SDK / "build", ignore_errors=True)  # no stale output of a test file since removed
    run([NODE, str(TSC), "-p", "tsconfig.test.json"])
    return SDK / "build"


def current_spec() -> bytes:
    """The OpenAPI spec the server serves (building the app connects to nothing)."""
    from tests.offline_app import offline_client

    with offline_client() as client:
        resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.data


# --- no server ---------------------------------------------------------------------------------------
@pytest.mark.unit
def test_unit_tests_pass(compiled):
    node_tests(compiled / "test" / "unit")


@pytest.mark.unit
def test_generated_types_match_the_spec(compiled, tmp_path):
    spec = tmp_path / "openapi.json"
    spec.write_bytes(current_spec())
    fresh = tmp_path / "openapi.ts"
    assert NODE is not None
    run([NODE, "scripts/generate-types.mjs", str(spec), str(fresh)])
    committed = SDK / "src" / "generated" / "openapi.ts"
    diff = "".join(difflib.unified_diff(committed.read_text().splitlines(True), fresh.read_text().splitlines(True),
                                        "committed", "from the current spec", n=1))
    assert not diff, ("src/generated/openapi.ts is stale: regenerate it with "
                      "`node scripts/generate-types.mjs` in clients/typescript against a running server\n" + diff)


@pytest.mark.unit
def test_vocabulary_matches_python(compiled):
    assert NODE is not None
    script = ("import * as v from './build/src/vocabulary.js';"
              "console.log(JSON.stringify({statuses: v.RUN_STATUSES, terminal: [...v.TERMINAL_STATUSES],"
              " events: v.EVENT_TYPES, providers: v.PROVIDERS, kinds: v.DEVICE_KINDS}))")
    ts = json.loads(run([NODE, "--input-type=module", "-e", script]).stdout)
    assert set(ts.pop("terminal")) == vocabulary.TERMINAL
    assert ts == {"statuses": list(vocabulary.STATUSES), "events": list(vocabulary.EVENT_TYPES),
                  "providers": list(vocabulary.PROVIDERS), "kinds": list(vocabulary.KINDS)}


# --- against the live API ----------------------------------------------------------------------------
@pytest.fixture()
def live_env(live_server, api_key, ssh_device, sshd) -> dict[str, str]:
    """What the node end-to-end tests read: the API, a key of a fresh tenant, its ssh device, the sshd login."""
    login = dict(host=sshd.host, port=sshd.port, username=sshd.username, private_key=sshd.private_key,
                 host_key=sshd.host_key)
    return {"AGENTRUNS_API_URL": live_server, "AGENTRUNS_API_KEY": api_key, "AGENTRUNS_TEST_DEVICE": ssh_device["id"],
            "AGENTRUNS_TEST_WORKDIR": ssh_device["workdir"], "AGENTRUNS_TEST_SSH": json.dumps(login)}


@pytest.mark.e2e
def test_end_to_end(compiled, live_env):
    node_tests(compiled / "test" / "e2e", env=live_env)


def readme_example() -> str:
    """The README's example: examples/quickstart.mjs, which the README must show verbatim."""
    code = EXAMPLE.read_text()
    readme = (SDK / "README.md").read_text()
    assert f"```js\n{code}```" in readme, "README.md must include examples/quickstart.mjs verbatim in a ```js block"
    return code


CONSUMER_TS = """\
import { Agentruns, type AgentRun, NotFoundError } from "agentruns";

const client = new Agentruns({ baseUrl: "http://127.0.0.1:1" });
export async function finished(id: string): Promise<AgentRun["status"]> {
  try {
    return (await client.agentRuns.wait(id, { timeoutMs: 1000 })).status;
  } catch (error) {
    if (error instanceof NotFoundError) return "failed";
    throw error;
  }
}
"""


@pytest.mark.e2e
def test_packed_tarball_installs_and_runs_the_readme_example(compiled, live_env, client, auth, sshd, tmp_path):
    # The example targets a computer named pc-1: register one on the test sshd for this tenant.
    login = json.loads(live_env["AGENTRUNS_TEST_SSH"])
    resp = client.post("/api/v1/devices", json={"id": "pc-1", "kind": "computer", **login,
                                                "default_cwd": live_env["AGENTRUNS_TEST_WORKDIR"]}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    example = readme_example()
    assert NPM is not None and NODE is not None

    packed = run([NPM, "pack", "--silent", "--pack-destination", str(tmp_path)]).stdout.strip().splitlines()[-1]
    tarball = tmp_path / packed
    with tarfile.open(tarball) as tar:
        shipped = set(tar.getnames())
    assert {"package/dist/index.js", "package/dist/index.d.ts", "package/README.md", "package/package.json"} <= shipped
    assert not [n for n in shipped if n.startswith(("package/src/", "package/test/", "package/build/"))], shipped

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "consumer", "private": true, "type": "module"}\n')
    run([NPM, "install", "--no-audit", "--no-fund", "--offline", str(tarball)], cwd=app)
    assert not (app / "node_modules" / "agentruns" / "node_modules").exists()  # no runtime dependencies

    (app / "quickstart.mjs").write_text(example)
    out = run([NODE, "quickstart.mjs"], cwd=app, env=live_env).stdout
    assert out == f"succeeded hello from {sshd.username}\n\n"

    # The shipped declarations type-check a TypeScript consumer (strict, NodeNext resolution).
    (app / "consumer.ts").write_text(CONSUMER_TS)
    (app / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "module": "NodeNext", "moduleResolution": "NodeNext", "target": "ES2022",
        "lib": ["ES2022", "DOM"], "types": [], "noEmit": True}, "files": ["consumer.ts"]}))
    run([NODE, str(TSC), "-p", "tsconfig.json"], cwd=app)
