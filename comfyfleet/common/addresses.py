"""The SSRF guard: which addresses an outgoing request may connect to.

A client chooses the URL (a webhook subscriber its endpoint, a submitter an input file's
URL), so without a guard it could make us connect into our own network (databases, cloud
metadata at 169.254.169.254, admin ports on loopback). The check runs on the address actually
being connected to, after DNS, for every connection (``socket_factory`` below), so a name that
resolves to a private address, or one that changes its answer between checks (DNS
rebinding), is refused too. The webhook service's deliveries and the gateway's input
downloads both use it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from comfyfleet.common.config import ConfigError, Settings, setting

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BENCHMARKING = ipaddress.ip_network("198.18.0.0/15")


class AddressRefused(OSError):
    """A connection would go to an address the guard forbids."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """A comma-separated list of CIDR networks (a bare address is a /32 or /128)."""
    out: list[IPNetwork] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError as err:
            raise ConfigError(f"{part!r} is not an IP network: {err}") from err
    return tuple(out)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is ("loopback", "private", ...), or None."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        kind = classify(inner)
        return f"{kind} (inside {ip})" if kind else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", ip in _CGNAT),
        ("reserved", ip.is_reserved or ip in _BENCHMARKING),
        ("private", ip.is_private),
    )
    for kind, hit in checks:
        if hit:
            return kind
    return None if ip.is_global else "non-global"


def _is_loopback(ip: IPAddress) -> bool:
    inner = _embedded_ipv4(ip)
    return (inner or ip).is_loopback


@dataclass(frozen=True)
class AddressPolicy(Settings):
    """Public addresses pass; others only when allowed by the loopback switch or a network.

    Read from ``COMFYFLEET_<prefix>ALLOW_LOOPBACK`` and ``_ALLOWED_NETWORKS`` (the webhook's
    prefix is ``WEBHOOK_``, the gateway's downloads' ``GATEWAY_FETCH_``).
    """

    # Lets connections reach 127.0.0.0/8 and ::1 (tests and `make up`), nothing else private.
    allow_loopback: bool = setting("ALLOW_LOOPBACK", False)
    # Networks reachable although private or reserved (an operator's internal receivers):
    # comma-separated CIDR networks.
    allowed_networks: Sequence[IPNetwork] = setting("ALLOWED_NETWORKS", (), parse=parse_networks)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why connecting to ``ip`` is refused, or None when it is allowed."""
        kind = classify(ip)
        if kind is None:
            return None
        if self.allow_loopback and _is_loopback(ip):
            return None
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return None
        return f"{ip} is a {kind} address"

    def refusal_for_host(self, host: str) -> str | None:
        """Why a URL host that is an IP literal is refused; names are checked on connect."""
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return None
        return self.refusal(ip)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's hook to make each outgoing socket: refuses forbidden destinations."""
        family, type_, proto, _, sockaddr = addr_info
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = self.refusal(ip)
        if why is not None:
            # An errno keeps the reason in aiohttp's error when several addresses fail.
            raise AddressRefused(errno.EACCES, f"refused to connect: {why}")
        return socket.socket(family=family, type=type_, proto=proto)
