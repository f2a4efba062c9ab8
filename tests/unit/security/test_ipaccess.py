"""Client address resolution and the allow-list: real peer, trusted proxies only, v4-mapped v6."""

from __future__ import annotations

import ipaddress

import pytest

from kdf_remote.daemon.security.ipaccess import (
    IpAllowList,
    NetworkSet,
    ip_network,
    normalize_address,
    rate_key,
    resolve_client,
)

pytestmark = [pytest.mark.unit, pytest.mark.security]

PROXIES = NetworkSet([ip_network("10.0.0.0/30"), ip_network("fd00::1/128")])


def test_addresses_are_normalized() -> None:
    """IPv4-mapped IPv6 becomes IPv4, zone ids and brackets are dropped, junk is None."""
    assert normalize_address("::ffff:192.0.2.7") == ipaddress.IPv4Address("192.0.2.7")
    assert normalize_address("[2001:db8::1]") == ipaddress.IPv6Address("2001:db8::1")
    assert normalize_address("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")
    for junk in ("", None, "unix:/run/x", "999.1.1.1", "1.2.3.4, 5.6.7.8"):
        assert normalize_address(junk) is None


def test_allow_list_matches_cidr_edges_and_mapped_peers() -> None:
    """CIDR edges are exact; a v4-mapped v6 peer matches an IPv4 entry and vice versa."""
    allow = IpAllowList([ip_network("203.0.113.0/24"), ip_network("::ffff:198.51.100.9")])
    assert allow.allows(normalize_address("203.0.113.0"))
    assert allow.allows(normalize_address("203.0.113.255"))
    assert not allow.allows(normalize_address("203.0.114.0"))
    assert allow.allows(normalize_address("::ffff:203.0.113.9"))
    assert allow.allows(normalize_address("198.51.100.9"))
    assert not allow.allows(normalize_address("198.51.100.10"))
    assert not allow.allows(None)


def test_allow_list_handles_ipv6_networks() -> None:
    """IPv6 CIDRs admit their block only."""
    allow = IpAllowList([ip_network("2001:db8:1::/48")])
    assert allow.allows(normalize_address("2001:db8:1:ffff::1"))
    assert not allow.allows(normalize_address("2001:db8:2::1"))
    assert not allow.allows(normalize_address("192.0.2.1"))


def test_empty_allow_list_admits_everyone() -> None:
    """Without ``allowed_ips`` no address is refused."""
    allow = IpAllowList([])
    assert not allow.restricted
    assert allow.allows(normalize_address("198.51.100.1"))


def test_forwarded_header_from_an_untrusted_peer_is_ignored() -> None:
    """Any X-Forwarded-For from a non-proxy peer leaves the client as the peer."""
    for header in (b"1.1.1.1", b"10.0.0.1, 8.8.8.8", b"garbage"):
        assert resolve_client("198.51.100.4", [header], PROXIES) == ipaddress.IPv4Address(
            "198.51.100.4"
        )


def test_forwarded_header_from_a_trusted_proxy_yields_the_nearest_untrusted_hop() -> None:
    """Behind trusted proxies, the rightmost untrusted hop is the client; spoofed left hops lose."""
    got = resolve_client("10.0.0.1", [b"6.6.6.6, 192.0.2.50"], PROXIES)
    assert got == ipaddress.IPv4Address("192.0.2.50")
    chained = resolve_client("10.0.0.1", [b"1.1.1.1, 192.0.2.50", b"10.0.0.2"], PROXIES)
    assert chained == ipaddress.IPv4Address("192.0.2.50")
    mapped_proxy = resolve_client("::ffff:10.0.0.1", [b"192.0.2.51"], PROXIES)
    assert mapped_proxy == ipaddress.IPv4Address("192.0.2.51")
    v6_proxy = resolve_client("fd00::1", [b"2001:db8::5"], PROXIES)
    assert v6_proxy == ipaddress.IPv6Address("2001:db8::5")


def test_malformed_hop_behind_a_proxy_resolves_to_the_proxy() -> None:
    """A hop the proxy did not write cleanly stops the walk at the trusted proxy itself."""
    assert resolve_client("10.0.0.1", [b"not-an-ip"], PROXIES) == ipaddress.IPv4Address("10.0.0.1")


def test_rate_keys_group_ipv6_by_64() -> None:
    """Addresses in one IPv6 /64 share a rate-limit bucket; IPv4 addresses do not."""
    a = rate_key(normalize_address("2001:db8:0:1::1"))
    b = rate_key(normalize_address("2001:db8:0:1:ffff::2"))
    c = rate_key(normalize_address("2001:db8:0:2::1"))
    assert a == b != c
    assert rate_key(normalize_address("192.0.2.1")) != rate_key(normalize_address("192.0.2.2"))
    assert rate_key(None) == "unknown"
