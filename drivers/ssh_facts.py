"""What a device's shell offers, learned once per connection, so each run's wrapper starts fewer programs.

On a device whose login shell is a POSIX shell and whose `timeout` is GNU coreutils', the wrapper
runs inside the login shell itself, and `timeout` (which puts itself in a new process group unless
told --foreground) is the run's process group leader. Every other device gets the generic wrapper:
`/bin/sh` starts the login shell for the command, and `setsid` makes the group. One probe exec per
new connection pays for this; a probe that fails leaves the connection on the generic wrapper.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# Shells that run a POSIX sh script as written, as a login shell with `-lc` (not zsh: it does not
# split unquoted words; not fish or csh).
_POSIX_LOGIN = re.compile(r"/(bash|dash|ksh|mksh|ash|sh)\Z")
_PATH = re.compile(r"/[^\0\n]*\Z")

PROBE = "exec /bin/sh -c " + shlex.quote("\n".join([
    "printf 'shell %s\\n' \"${SHELL:-}\"",
    "s=$(command -v setsid 2>/dev/null) && printf 'setsid %s\\n' \"$s\"",
    "t=$(command -v timeout 2>/dev/null) && case $(\"$t\" --version 2>/dev/null) in "
    "*'GNU coreutils'*) printf 'timeout %s\\n' \"$t\" ;; esac",
    "exit 0",
]))


@dataclass(frozen=True)
class DeviceFacts:
    """Absolute paths on the device ("" when absent or unknown)."""

    shell: str = ""  # the device user's login shell ($SHELL as sshd sets it)
    setsid: str = ""
    gnu_timeout: str = ""  # `timeout` from GNU coreutils: it makes its own process group

    @property
    def posix_login_shell(self) -> str:
        """The login shell, if the wrapper can run inside it ("" otherwise)."""
        return self.shell if _POSIX_LOGIN.search(self.shell) else ""


UNKNOWN = DeviceFacts()


def parse(output: bytes) -> DeviceFacts:
    """The probe's output; anything unexpected counts as absent."""
    found: dict[str, str] = {}
    for line in output.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition(" ")
        if name in ("shell", "setsid", "timeout") and _PATH.match(value):
            found.setdefault(name, value)
    return DeviceFacts(shell=found.get("shell", ""), setsid=found.get("setsid", ""),
                       gnu_timeout=found.get("timeout", ""))
