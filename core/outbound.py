"""Where the service may send requests of its own (webhooks): the server-side request forgery rules.

A URL a tenant gives must not make the service reach what only the service can reach: loopback, the
private networks, link-local addresses (the cloud metadata service at 169.254.169.254 among them),
multicast, or the unspecified address. The check is made on the addresses a name resolves to, at the
time the URL is stored and again at every connection, on the address actually connected to (a name
can resolve elsewhere later: DNS rebinding). `allow_private` is the operator's opt-in
(AGENTRUNS_WEBHOOK_ALLOW_PRIVATE), for a receiver on the operator's own network, and for tests.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(ValueError):
    """The service will not send to this URL or address; the message says why, for the caller."""


class Unresolvable(Refused):
    """The host does not resolve (now): refused when a URL is stored, retried when delivering."""


# IPv6 prefixes that carry an IPv4 address in their low 32 bits: NAT64 (a DNS64 resolver maps every
# IPv4 name there) and the deprecated IPv4-compatible form.
_EMBEDDING = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
              ipaddress.ip_network("::/96"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, 6to4, Teredo, NAT64, compatible)."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    found.extend(address.teredo or ())
    if any(address in net for net in _EMBEDDING) and int(address) > 1:  # not :: or ::1, judged as themselves
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a connection to this address is refused without the operator's opt-in, or None.

    An IPv6 address that carries an IPv4 address (::ffff:10.0.0.1, 64:ff9b::a9fe:a9fe, 2002:a9fe:a9fe::)
    is judged by the IPv4 address it reaches.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded:
            reasons = [r for r in map(forbidden_reason, embedded) if r]
            return reasons[0] if reasons else None
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (the cloud metadata service lives there)"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_reserved or not address.is_global:  # RFC 1918, CGNAT, unique-local, documentation ranges
        return "a private or reserved address"
    return None


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """The URL if the service may send to it; Refused otherwise. Resolves the host (a DNS lookup)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise Refused("must be an https URL")
    if parts.scheme == "http" and not allow_http:
        raise Refused("must be an https URL (this server does not allow http webhooks)")
    if not parts.hostname:
        raise Refused("has no host")
    if parts.username or parts.password:
        raise Refused("must not carry credentials; the signature authenticates the sender")
    if not url.isascii():
        raise Refused("must be ASCII: percent-encode the path and use the host's IDNA (xn--) form")
    resolve(parts.hostname, port, allow_private=allow_private)
    return url


def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses of `host` a connection may go to; Refused if any of them is forbidden.

    Refusing the name as a whole (not only the bad addresses) is on purpose: a name with one public
    and one internal address is a rebinding attempt more often than a real receiver.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"host {host!r} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for text in addresses:
            reason = forbidden_reason(ipaddress.ip_address(text.split("%")[0]))
            if reason:
                # The address itself is not echoed: a tenant must not map the internal network with it.
                raise Refused(f"host {host!r} resolves to {reason}; the operator can allow such receivers "
                              "with AGENTRUNS_WEBHOOK_ALLOW_PRIVATE")
    return addresses
