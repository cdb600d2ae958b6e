"""Opening one authenticated paramiko Transport: socket, host key pinning, auth, error codes.

The host key is checked after key exchange and before any credential is sent, so a device with a
changed key never sees our key signature or password.
"""
from __future__ import annotations

import base64
import hashlib
import io
import itertools
import socket
import struct
from collections.abc import Callable

import paramiko

from .base import (
    AUTH_FAILED,
    DEVICE_ADDRESS_REFUSED,
    DEVICE_UNREACHABLE,
    HOST_KEY_MISMATCH,
    HOST_KEY_UNKNOWN,
    DeviceSpec,
    DriverError,
)

HostKeyCallback = Callable[[str], None]  # receives a known_hosts line for a key accepted on first use

_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
# Host key algorithms that present a key of a given known_hosts type.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def parse_host_keys(text: str) -> list[tuple[str, bytes]]:
    """(key type, key blob) pairs from known_hosts lines ("host type base64" or "type base64")."""
    keys = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        for kind, data in itertools.pairwise(tokens):
            blob = _decode_blob(data)
            if blob is not None and _blob_type(blob) == kind:
                keys.append((kind, blob))
                break
    return keys


def fingerprint(blob: bytes) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_line(spec: DeviceSpec, key: paramiko.PKey) -> str:
    """A known_hosts line pinning `key` for the spec's host and port."""
    host = spec.host if spec.port == 22 else f"[{spec.host}]:{spec.port}"
    return f"{host} {key.get_name()} {key.get_base64()}"


def load_private_key(pem: str) -> paramiko.PKey:
    """Parse an Ed25519, ECDSA or RSA private key from PEM/OpenSSH text."""
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(pem))
        except paramiko.PasswordRequiredException:
            raise DriverError(AUTH_FAILED, "the device's private key is passphrase-protected; "
                              "store it unencrypted (it is encrypted at rest by the service)",
                              before_start=True) from None
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    # Never include the key text in the message.
    raise DriverError(AUTH_FAILED, "the device's private key is not a readable Ed25519, ECDSA or RSA key",
                      before_start=True)


def connect(spec: DeviceSpec, pins: str | None, on_host_key: HostKeyCallback | None) -> paramiko.Transport:
    """Return an authenticated Transport to the device, or raise a DriverError (before_start=True).

    pins: known_hosts text the server key must match; None means unknown (refused unless the spec
    trusts on first use, in which case on_host_key receives the accepted key's line).
    """
    pinned = parse_host_keys(pins) if pins else []
    if pins and not pinned:
        raise DriverError(HOST_KEY_MISMATCH, f"the pinned host key for {spec.host} is not a valid "
                          "known_hosts line", before_start=True)
    sock = _open_socket(spec)
    transport = paramiko.Transport(sock)
    try:
        _prefer_pinned_types(transport, pinned)
        transport.banner_timeout = spec.connect_timeout
        transport.auth_timeout = spec.connect_timeout
        try:
            transport.start_client(timeout=spec.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise DriverError(DEVICE_UNREACHABLE, f"SSH handshake with {_where(spec)} failed: {exc}",
                              before_start=True) from None
        key = transport.get_remote_server_key()
        _check_host_key(spec, key, pinned, on_host_key)
        _authenticate(spec, transport)
        transport.set_keepalive(30)  # keeps NAT/firewall state alive and notices dead peers
        return transport
    except BaseException:
        transport.close()
        raise


def _open_socket(spec: DeviceSpec) -> socket.socket:
    if not spec.host:
        raise DriverError(DEVICE_UNREACHABLE, f"device {spec.id} has no host", before_start=True)
    try:
        found = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DriverError(DEVICE_UNREACHABLE, f"cannot resolve {spec.host}: {exc.strerror}",
                          before_start=True) from None
    except UnicodeError:
        raise DriverError(DEVICE_UNREACHABLE, f"cannot resolve {spec.host}: not a valid host name",
                          before_start=True) from None
    _check_addresses(spec, found)
    try:
        # The addresses just checked, not the name again: a second lookup could answer otherwise.
        sock = _connect_first(found, spec.connect_timeout)
    except TimeoutError:
        raise DriverError(DEVICE_UNREACHABLE, f"connecting to {_where(spec)} timed out after "
                          f"{spec.connect_timeout:g} s", before_start=True) from None
    except OSError as exc:
        raise DriverError(DEVICE_UNREACHABLE, f"cannot connect to {_where(spec)}: {exc.strerror or exc}",
                          before_start=True) from None
    # paramiko leaves Nagle on, which delays every small channel message by ~44 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _check_addresses(spec: DeviceSpec, found: list) -> None:
    """Refuse the whole host if any address it resolves to is refused (as the API does at create)."""
    if spec.address_check is None:
        return
    for *_, sockaddr in found:
        reason = spec.address_check(str(sockaddr[0]))
        if reason:
            raise DriverError(DEVICE_ADDRESS_REFUSED, f"refusing to connect to {_where(spec)}: {reason}",
                              before_start=True)


def _connect_first(found: list, timeout: float) -> socket.socket:
    """A socket connected to the first of these getaddrinfo() results that accepts (as
    socket.create_connection does for a name); the last failure if none does."""
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in found:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address to connect to")


def _prefer_pinned_types(transport: paramiko.Transport, pinned: list[tuple[str, bytes]]) -> None:
    # A server with several host keys presents the one we ask for first; without this, pinning the
    # RSA key of a server that also has an Ed25519 key would look like a mismatch.
    wanted = [alg for kind, _ in pinned for alg in _ALGORITHMS.get(kind, (kind,))]
    options = transport.get_security_options()
    available = list(options.key_types)
    first = [alg for alg in dict.fromkeys(wanted) if alg in available]
    if first:
        options.key_types = first + [alg for alg in available if alg not in first]


def _check_host_key(spec, key: paramiko.PKey, pinned, on_host_key) -> None:
    seen = key.asbytes()
    if pinned:
        if any(blob == seen for _, blob in pinned):
            return
        expected = ", ".join(f"{kind} {fingerprint(blob)}" for kind, blob in pinned)
        raise DriverError(
            HOST_KEY_MISMATCH,
            f"host key for {_where(spec)} changed: expected {expected}, the server presented "
            f"{key.get_name()} {fingerprint(seen)}. If the device was legitimately reinstalled, "
            "update its pinned host key; otherwise someone may be intercepting the connection.",
            before_start=True,
        )
    line = known_hosts_line(spec, key)
    if not spec.trust_on_first_use:
        raise DriverError(
            HOST_KEY_UNKNOWN,
            f"no host key is pinned for {_where(spec)}; the server presented {key.get_name()} "
            f"{fingerprint(seen)}. Verify it out of band and pin: {line}",
            before_start=True,
        )
    if on_host_key is not None:
        on_host_key(line)  # an exception here aborts the connection: the caller could not pin it


def _authenticate(spec: DeviceSpec, transport: paramiko.Transport) -> None:
    if not spec.username:
        raise DriverError(AUTH_FAILED, f"device {spec.id} has no username", before_start=True)
    try:
        if spec.private_key:
            transport.auth_publickey(spec.username, load_private_key(spec.private_key))
        elif spec.password:
            transport.auth_password(spec.username, spec.password)
        else:
            raise DriverError(AUTH_FAILED, f"device {spec.id} has neither a private key nor a password",
                              before_start=True)
    except paramiko.AuthenticationException as exc:
        raise DriverError(AUTH_FAILED, f"authentication as {spec.username} on {_where(spec)} failed: "
                          f"{exc}", before_start=True) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise DriverError(DEVICE_UNREACHABLE, f"connection to {_where(spec)} dropped during "
                          f"authentication: {exc}", before_start=True) from None
    if not transport.is_authenticated():
        raise DriverError(AUTH_FAILED, f"authentication as {spec.username} on {_where(spec)} failed",
                          before_start=True)


def _where(spec: DeviceSpec) -> str:
    return f"{spec.host}:{spec.port}"


def _decode_blob(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        return None


def _blob_type(blob: bytes) -> str | None:
    # An SSH public key blob starts with its type as a length-prefixed string.
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    try:
        return blob[4:4 + n].decode("ascii") if 4 + n <= len(blob) else None
    except UnicodeDecodeError:
        return None
