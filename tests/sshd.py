"""A throwaway OpenSSH sshd on 127.0.0.1 for the driver tests: real server, real keys, no mocks.

Plain functions and classes so any test (or a benchmark) can use them; tests/conftest_sshd.py wraps
them in pytest fixtures.
"""
from __future__ import annotations

import ctypes
import fcntl
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DEVICE_USER = "agentruns-dev"  # root's ~/.bashrc here costs ~90 ms per command: log in as a plain user
MISSING_SSHD = f"{SSHD} not found: run `apt-get install -y openssh-server` (CI installs it)"


class SshdError(RuntimeError):
    """The throwaway sshd could not be prepared or started."""


def ensure_device_user() -> str:
    """Return the login user for the device: a plain account when root (created if missing), else us."""
    if os.geteuid() != 0:
        return getpass.getuser()
    # Parallel test processes (pytest-xdist) may get here at once: useradd would fail for the second.
    with open("/tmp/agentruns-device-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(DEVICE_USER)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", DEVICE_USER], check=True, capture_output=True)
        # A new account is locked ("!"), and sshd refuses locked accounts even for key auth; "*" means
        # "no password" without the lock.
        subprocess.run(["usermod", "-p", "*", DEVICE_USER], check=True, capture_output=True)
    return DEVICE_USER


def keygen(path: Path, kind: str = "ed25519") -> tuple[str, str]:
    """Create a key pair with ssh-keygen; return (private key PEM text, public key line)."""
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"agentruns-test-{kind}", "-f", str(path)]
    if kind == "rsa":
        args[4:4] = ["-b", "2048"]  # the 3072-bit default costs a second on a slow machine
    subprocess.run(args, check=True, capture_output=True)
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshServer:
    """One running sshd and everything a test needs to reach it."""

    host: str
    port: int
    username: str
    private_key: str  # ed25519, authorized
    host_key: str  # known_hosts line "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    workdir: Path
    client_keys: dict[str, str] = field(default_factory=dict, repr=False)  # kind -> PEM, all authorized
    proc: subprocess.Popen | None = field(default=None, repr=False)
    extra_config: dict[str, str | list[str]] = field(default_factory=dict)

    def spec(self, **overrides):
        """A DeviceSpec for this server, pinned to its host key."""
        from drivers.base import DeviceSpec

        fields = dict(id=f"sshd-{self.port}", driver="ssh", host=self.host, port=self.port,
                      username=self.username, private_key=self.private_key, host_key=self.host_key,
                      connect_timeout=5.0)
        fields.update(overrides)
        return DeviceSpec(**fields)

    def spawn(self, *, new_host_key: bool = False, port: int | None = None,
              extra_config: dict[str, str | list[str]] | None = None) -> SshServer:
        """Start another sshd on a new port for the same user and client keys.

        new_host_key=True gives it a different host key (the "device was replaced" case); port
        reuses a given port (e.g. of a stopped server), default a free one;
        extra_config overrides sshd_config settings (e.g. {"MaxSessions": "2"}; a list value
        repeats the keyword).
        """
        workdir = Path(tempfile.mkdtemp(prefix="agentruns-sshd-"))
        workdir.chmod(0o755)
        shutil.copy(self.workdir / "authorized_keys", workdir / "authorized_keys")
        (workdir / "authorized_keys").chmod(0o644)
        if new_host_key:
            keygen(workdir / "host_ed25519")
        else:
            for name in ("host_ed25519", "host_ed25519.pub"):
                shutil.copy(self.workdir / name, workdir / name)
        server = replace(self, workdir=workdir, port=port or free_port(), proc=None,
                         extra_config={**self.extra_config, **(extra_config or {})})
        server._start()
        return server

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def cut(self) -> None:
        """What a network cut does to this device: the listener and every connection's sshd die, the
        commands they started keep running. `resume()` brings the listener back on the same port."""
        if self.proc is None:
            return
        doomed = [pid for pid in _descendants(self.proc.pid) if _comm(pid).startswith("sshd")]
        for pid in [self.proc.pid, *doomed]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(5)

    def resume(self) -> None:
        """Start the listener again after cut(), same port, same host key."""
        self._start()

    def pgrep(self, marker: str) -> list[int]:
        """Pids of the device user's processes whose command line contains `marker`."""
        out = subprocess.run(["pgrep", "-u", self.username, "-f", marker], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def run_as_user(self, command: str, timeout: float = 10) -> subprocess.CompletedProcess:
        """Run a shell command as the device user on this machine (the device), capturing text output."""
        argv = ["sh", "-c", command]
        if os.geteuid() == 0 and self.username != "root":
            argv = ["runuser", "-u", self.username, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def log(self) -> str:
        """The server's log so far (sshd -e writes to stderr, redirected to a file)."""
        path = self.workdir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _start(self) -> None:
        host_pub = (self.workdir / "host_ed25519.pub").read_text().split()
        self.host_key = f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}"
        config = self.workdir / "sshd_config"
        config.write_text(_config(self.workdir, self.port, self.username, self.extra_config))
        with open(self.workdir / "sshd.log", "wb") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent_hook())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SshdError(f"sshd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SshdError(f"sshd did not listen on {self.host}:{self.port} within 10 s:\n{self.log()}")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    """Every process below pid (children first), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _die_with_parent_hook():
    """A preexec_fn so a test run killed before its teardown leaves no sshd behind (Linux only)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing may import after fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _config(workdir: Path, port: int, user: str, extra: dict[str, str | list[str]]) -> str:
    settings: dict[str, str | list[str]] = {
        "Port": str(port),
        "ListenAddress": "127.0.0.1",
        "HostKey": str(workdir / "host_ed25519"),
        "AuthorizedKeysFile": str(workdir / "authorized_keys"),
        "PidFile": str(workdir / "sshd.pid"),
        "UsePAM": "no",
        "StrictModes": "no",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "PubkeyAuthentication": "yes",
        "PermitRootLogin": "prohibit-password",
        "AllowUsers": user,
        "MaxSessions": "100",
        "MaxStartups": "200",  # the default 10:30:100 drops bursts of new connections at random
        "UseDNS": "no",
        "PrintMotd": "no",
        "PrintLastLog": "no",
    }
    settings.update(extra)
    # A list value repeats the keyword (e.g. several HostKey lines).
    return "".join(f"{k} {v}\n" for k, vs in settings.items() for v in (vs if isinstance(vs, list) else [vs]))


def start_sshd() -> SshServer:
    """Start a fresh sshd with its own host key and an authorized ed25519, ECDSA and RSA client key."""
    if not os.path.exists(SSHD):
        raise SshdError(MISSING_SSHD)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    elif not os.path.isdir("/run/sshd"):
        raise SshdError("/run/sshd is missing; create it as root (sshd's privilege separation dir)")
    username = ensure_device_user()
    # Not under pytest's tmp dir: that is 0700 root, and sshd reads authorized_keys as the user.
    workdir = Path(tempfile.mkdtemp(prefix="agentruns-sshd-"))
    workdir.chmod(0o755)
    try:
        keygen(workdir / "host_ed25519")
        keys, lines = {}, []
        for kind in ("ed25519", "ecdsa", "rsa"):
            keys[kind], pub = keygen(workdir / f"client_{kind}", kind)
            lines.append(pub)
        (workdir / "authorized_keys").write_text("\n".join(lines) + "\n")
        (workdir / "authorized_keys").chmod(0o644)
        server = SshServer(host="127.0.0.1", port=free_port(), username=username,
                           private_key=keys["ed25519"], host_key="", workdir=workdir, client_keys=keys)
        server._start()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return server
