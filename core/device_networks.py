"""Which addresses devices may point at: the operator's allow-list, AGENTRUNS_DEVICE_NETWORKS.

Unset (the default): every address but loopback, link-local (169.254.169.254, the cloud metadata
service, is one), multicast, unspecified, and the addresses of this service's own PostgreSQL and
Redis hosts. Set (comma-separated CIDRs): exactly the addresses inside a listed network. The list is
the operator's explicit word, so a listed network wins over the default refusals: the tests list
127.0.0.0/8 (their sshd, PostgreSQL and Redis all live on loopback), and a list holding the
database's network lets devices point at the database host. Only the unspecified address (0.0.0.0,
::, which Linux connects to loopback) is refused whatever the list says. An IPv4-mapped IPv6 address
(::ffff:127.0.0.1) is judged as its IPv4 address.

Checked on every address a device's host resolves to when the device is created or its host changes
(a name that does not resolve is accepted then), and again by the ssh driver on the addresses it is
about to connect to (DeviceSpec.address_check), so a name that resolves elsewhere later (DNS
rebinding) is refused too. `local` devices have no address and are not affected.
"""
from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from core.outbound import embedded_ipv4

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger("agentruns.device_networks")

SETTING = "AGENTRUNS_DEVICE_NETWORKS"
LOOPBACK = "127.0.0.0/8,::1/128"  # the opt-in of the test suite (its devices are sshd on 127.0.0.1)
EVERYWHERE = "0.0.0.0/0,::/0"  # `agentruns dev`: one user who may run local devices anyway

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def parse(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated CIDR list ("" gives none); ValueError naming the bad entry."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            # Host bits are forgiven (10.0.0.1/8 is 10.0.0.0/8); a bare address is its /32 or /128.
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{SETTING}: {item!r} is not a network in CIDR notation "
                             "(e.g. 10.0.0.0/8,192.168.1.0/24,fd00::/8)") from None
    return tuple(networks)


def address(text: str) -> Address:
    """An IP address (ValueError if `text` is none); an IPv4-mapped IPv6 address as its IPv4 address."""
    ip = ip_address(text)
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def service_hosts(*urls: str) -> tuple[str, ...]:
    """The network hosts named by database/Redis URLs (unix sockets have none)."""
    hosts: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        names = [parts.hostname or ""]
        # libpq also takes its host(s) from the query: ?host=a,b or a socket directory ?host=/run/pg
        for value in parse_qs(parts.query).get("host", []):
            names.extend(value.split(","))
        hosts.extend(n for n in names if n and not n.startswith("/"))
    return tuple(dict.fromkeys(hosts))


class DeviceNetworks:
    """The rule: refusal(address) says why a device may not use an address, or None if it may."""

    def __init__(self, networks: str = "", service_hosts: Iterable[str] = ()):
        self.networks = parse(networks)
        self._hosts = tuple(service_hosts)
        self._resolved: dict[str, frozenset[Address]] = {}  # service host -> its addresses, once resolved
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # shows in the ssh pool's keys (logs): the rule, not an object id
        return f"DeviceNetworks({','.join(map(str, self.networks)) or 'default'})"

    def refusal(self, text: str) -> str | None:
        """Why a device may not connect to the IP address `text`, or None when it may."""
        why = self._why(text)
        return f"{text} is {why}" if why else None

    def check_host(self, host: str) -> str | None:
        """Why a device may not point at `host` (a name or an address): the first of the addresses it
        resolves to that is refused; None when all are allowed or it does not resolve now (the
        driver checks again when it connects)."""
        try:
            found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        for addr in dict.fromkeys(str(info[4][0]) for info in found):
            why = self._why(addr)
            if why:
                return f"{addr} is {why}" if addr == host else f"{host} resolves to {addr}, {why}"
        return None

    def _why(self, text: str) -> str | None:
        try:
            ip = address(text)
        except ValueError:
            return "not an IP address"
        if isinstance(ip, IPv6Address):
            # NAT64, 6to4, Teredo and IPv4-compatible addresses lead to an IPv4 address: judged as it too.
            for inner in embedded_ipv4(ip):
                why = self._why(str(inner))
                if why:
                    return f"{why} (carried in an IPv6 address)"
        if ip.is_unspecified:
            return "the unspecified address (it connects to this host itself), which devices may never use"
        if self.networks:
            if any(ip.version == net.version and ip in net for net in self.networks):
                return None
            return f"outside the networks devices may use ({SETTING})"
        for test, kind in _DEFAULT_REFUSED:
            if test(ip):
                return f"{kind}, {_HINT}"
        if ip in self._service_addresses():
            return f"the address of this service's own database or Redis host, {_HINT}"
        return None

    def _service_addresses(self) -> frozenset[Address]:
        # Resolved once, on first use (not at import or startup); a host that does not resolve now
        # is tried again at the next check rather than remembered as having no address.
        with self._lock:
            missing = [h for h in self._hosts if h not in self._resolved]
        for host in missing:
            try:
                found = frozenset(address(str(info[4][0])) for info in socket.getaddrinfo(host, None))
            except (OSError, UnicodeError, ValueError) as exc:
                log.warning("cannot resolve the service host %s to keep devices off it: %s", host, exc)
                continue
            with self._lock:
                self._resolved[host] = found
        with self._lock:
            return frozenset().union(*self._resolved.values())


_HINT = f"which devices may not use unless the operator allows its network in {SETTING}"
_DEFAULT_REFUSED = (
    (lambda ip: ip.is_loopback, "a loopback address"),
    (lambda ip: ip.is_link_local, "a link-local address (169.254.169.254 is the cloud metadata service)"),
    (lambda ip: ip.is_multicast, "a multicast address"),
)


def policy(settings: Settings) -> DeviceNetworks:
    """The rule for these settings; one object per distinct configuration in a process (the service
    hosts are resolved once, and the ssh pool keeps connections made under different rules apart)."""
    return _policy(settings.device_networks, settings.database_url, settings.redis_url)


@functools.lru_cache(maxsize=16)
def _policy(networks: str, database_url: str, redis_url: str) -> DeviceNetworks:
    return DeviceNetworks(networks, service_hosts(database_url, redis_url))
