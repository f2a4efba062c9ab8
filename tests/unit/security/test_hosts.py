"""``security.allowed_hosts``: literal names, wildcard suffixes, ports, IP literals."""

from __future__ import annotations

import pytest

from kdf_remote.daemon.security.hosts import HostAllowList, check_allowed_host, host_of

pytestmark = [pytest.mark.unit, pytest.mark.security]


@pytest.mark.parametrize(
    ("header", "host"),
    [
        (b"kdf.example.com", "kdf.example.com"),
        (b"KDF.Example.COM:8443", "kdf.example.com"),
        (b"kdf.example.com.", "kdf.example.com"),
        (b"203.0.113.7:443", "203.0.113.7"),
        (b"[2001:DB8::1]:8443", "2001:db8::1"),
        (b"[2001:db8::1]", "2001:db8::1"),
        (b"kdf.example.com:", None),
        (b"kdf.example.com:80x", None),
        (b"[2001:db8::1", None),
        (b"\xff.example.com", None),
        (None, None),
    ],
)
def test_host_of_drops_the_port_and_normalises(header: bytes | None, host: str | None) -> None:
    """The host part of a Host header, lower-cased, IPs in canonical form; junk is None."""
    assert host_of(header) == host


@pytest.mark.parametrize(
    "bad", ["kdf.example.com:443", "https://kdf", "a..b", "*", "-x.com", "*x.com"]
)
def test_bad_entries_are_refused(bad: str) -> None:
    """Ports, schemes, empty labels and bare wildcards are not host names."""
    with pytest.raises(ValueError, match="host name"):
        check_allowed_host(bad)


def test_dots_are_dots_not_patterns() -> None:
    """kdf.example.com never matches kdfXexample.com; a wildcard needs a label before it."""
    hosts = HostAllowList(["kdf.example.com", "*.fleet.example.com", "[2001:db8::1]"])
    assert hosts.allows(b"kdf.example.com:8443")
    assert not hosts.allows(b"kdfXexample.com")
    assert not hosts.allows(b"kdf.example.com.evil.net")
    assert hosts.allows(b"w1.fleet.example.com")
    assert not hosts.allows(b"fleet.example.com")
    assert not hosts.allows(b"w1Xfleet.example.com")
    assert hosts.allows(b"[2001:db8:0::1]:443")
    assert not hosts.allows(None)


def test_an_empty_list_admits_any_host() -> None:
    """No list configured: any Host, even none, is served (loopback and IP-only deployments)."""
    hosts = HostAllowList([])
    assert not hosts.restricted
    assert hosts.allows(None) and hosts.allows(b"anything")
