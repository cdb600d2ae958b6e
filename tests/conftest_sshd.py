"""pytest fixtures for a throwaway OpenSSH sshd on loopback (see tests/sshd.py).

Enabled from tests/conftest.py with `pytest_plugins = ["tests.conftest_sshd"]`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.sshd import MISSING_SSHD, SSHD, SshdError, SshServer, start_sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """A real sshd on 127.0.0.1 for the whole session: host, port, username, private_key, host_key."""
    if not os.path.exists(SSHD):
        pytest.fail(MISSING_SSHD, pytrace=False)
    try:
        server = start_sshd()
    except SshdError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_other_host_key(sshd) -> Iterator[SshServer]:
    """A second sshd for the same user and client keys, with a different host key."""
    server = sshd.spawn(new_host_key=True)
    yield server
    server.stop()


@pytest.fixture()
def ssh_spec(sshd):
    """A DeviceSpec for the session sshd, pinned to its host key."""
    return sshd.spec()
