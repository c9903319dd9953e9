"""The SSRF guard's table: which destinations deliveries may connect to."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from comfyfleet.common.addresses import AddressPolicy, AddressRefused, classify

STRICT = AddressPolicy()
LOOPBACK_OK = AddressPolicy(allow_loopback=True)
ALLOWLIST = AddressPolicy(allowed_networks=(ipaddress.ip_network("10.1.0.0/16"),))

# (address, what it is or None for public)
TABLE = [
    ("93.184.216.34", None),
    ("8.8.8.8", None),
    ("2606:4700:4700::1111", None),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("::ffff:127.0.0.1", "loopback (inside ::ffff:7f00:1)"),
    ("::ffff:10.0.0.1", "private (inside ::ffff:a00:1)"),
    ("::ffff:169.254.169.254", "link-local (inside ::ffff:a9fe:a9fe)"),
    ("2002:a00:1::", "private (inside 2002:a00:1::)"),
    ("64:ff9b::a9fe:a9fe", "link-local (inside 64:ff9b::a9fe:a9fe)"),
]


@pytest.mark.parametrize(("address", "kind"), TABLE)
def test_classify(address: str, kind: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("address", "kind"), TABLE)
def test_strict_policy_allows_only_public_addresses(address: str, kind: str | None) -> None:
    refusal = STRICT.refusal(ipaddress.ip_address(address))
    assert (refusal is None) == (kind is None)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("8.8.8.8", True),
    ],
)
def test_allow_loopback_opens_loopback_only(address: str, allowed: bool) -> None:
    assert (LOOPBACK_OK.refusal(ipaddress.ip_address(address)) is None) == allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("10.1.2.3", True), ("10.2.0.1", False), ("127.0.0.1", False), ("::ffff:10.1.0.1", False)],
)
def test_allowlist_opens_its_networks_only(address: str, allowed: bool) -> None:
    assert (ALLOWLIST.refusal(ipaddress.ip_address(address)) is None) == allowed


@pytest.mark.parametrize(
    ("host", "refused"),
    [("example.com", False), ("127.0.0.1", True), ("[::1]", True), ("1.1.1.1", False)],
)
def test_url_hosts_that_are_literals_are_checked_up_front(host: str, refused: bool) -> None:
    assert (STRICT.refusal_for_host(host) is not None) == refused


def test_the_socket_factory_refuses_before_any_socket_exists() -> None:
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))
    with pytest.raises(AddressRefused, match="link-local"):
        STRICT.socket_factory(info)


def test_the_socket_factory_makes_sockets_for_allowed_addresses() -> None:
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
    sock = LOOPBACK_OK.socket_factory(info)
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()
