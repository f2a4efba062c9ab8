"""Who is really calling: the TCP peer, or the client a trusted proxy forwarded for.

``X-Forwarded-For`` is read only when the TCP peer is in ``security.trusted_proxies``; from any
other peer it is ignored, so rotating it cannot change the address the allow-list and the rate
limiter see. Behind trusted proxies the header is walked from the right (the hop the nearest proxy
appended) past further trusted proxies; the first untrusted hop is the client. IPv4-mapped IPv6
addresses (``::ffff:192.0.2.1``) count as the IPv4 address, and IPv6 zone ids are dropped.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "IPAddress",
    "IPNetwork",
    "IpAllowList",
    "NetworkSet",
    "ip_network",
    "normalize_address",
    "rate_key",
    "resolve_client",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_HOPS: Final = 16
"""Hops of ``X-Forwarded-For`` examined; a longer chain resolves to the last hop examined."""


# Peers repeat (keep-alive, the same clients): caching the parse halves the gate's cost.
@functools.lru_cache(maxsize=4096)
def normalize_address(text: str | None) -> IPAddress | None:
    """Parse an address; IPv4-mapped IPv6 becomes IPv4; zone ids are dropped; junk is None."""
    if not text:
        return None
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    candidate = candidate.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_network(text: str) -> IPNetwork:
    """Parse a CIDR (an address alone is a /32 or /128); IPv4-mapped IPv6 becomes IPv4.

    Raises:
        ValueError: not a CIDR.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    return _unmap(network)


def _unmap(network: IPNetwork) -> IPNetwork:
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)
    return network


class NetworkSet:
    """A set of networks an address is tested against."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        unmapped = [_unmap(n) for n in networks]
        self._v4 = tuple(n for n in unmapped if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in unmapped if isinstance(n, ipaddress.IPv6Network))

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def __contains__(self, address: object) -> bool:
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in n for n in self._v4)
        if isinstance(address, ipaddress.IPv6Address):
            return any(address in n for n in self._v6)
        return False


class IpAllowList:
    """``security.allowed_ips``: empty admits every address; otherwise only those listed."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._networks = NetworkSet(networks)

    @property
    def restricted(self) -> bool:
        """True when a list is configured."""
        return bool(self._networks)

    def allows(self, address: IPAddress | None) -> bool:
        """Whether ``address`` may call; an unknown address is refused when a list is set."""
        if not self._networks:
            return True
        return address is not None and address in self._networks


def _forwarded_hops(values: Sequence[bytes]) -> list[str]:
    hops: list[str] = []
    for value in values:
        hops.extend(part.strip() for part in value.decode("latin-1").split(","))
    return hops


def resolve_client(
    peer: str | None, forwarded_for: Sequence[bytes], trusted_proxies: NetworkSet
) -> IPAddress | None:
    """The client address of a request.

    Args:
        peer: the TCP peer host from the ASGI scope.
        forwarded_for: every ``X-Forwarded-For`` header value, in order received.
        trusted_proxies: peers whose forwarded header is believed.

    Returns:
        The peer, unless it is a trusted proxy with a forwarded chain, in which case the first
        hop from the right that is not a trusted proxy; None when the peer is unknown.
    """
    client = normalize_address(peer)
    if client is None or not forwarded_for or client not in trusted_proxies:
        return client
    for hop_text in reversed(_forwarded_hops(forwarded_for)[-MAX_FORWARDED_HOPS:]):
        hop = normalize_address(hop_text)
        if hop is None:
            # A hop the trusted proxy did not write cleanly: stop at the proxy we trust.
            return client
        client = hop
        if hop not in trusted_proxies:
            return hop
    return client


@functools.lru_cache(maxsize=4096)
def rate_key(address: IPAddress | None) -> str:
    """The rate-limit bucket of an address: IPv4 as is, IPv6 by its /64 (one subscriber's block).

    Anyone holding an IPv6 /64 can rotate through 2**64 addresses; keying by the block stops that
    from yielding a fresh bucket per request.
    """
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
