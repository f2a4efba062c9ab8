"""KDF's port arithmetic (``mm2src/mm2_main/src/lp_network.rs``, ``lp_ports``)."""

from __future__ import annotations

from kdf_remote.kdf.errors import KdfConfigError

__all__ = ["DEFAULT_RPC_PORT", "DEPRECATED_NETIDS", "MAX_NETID", "MIN_RPC_PORT", "p2p_ports"]

DEFAULT_RPC_PORT = 7783
MIN_RPC_PORT = 1024
"""KDF rejects RPC ports 1-1023; 0 means "any free port"."""
MAX_NETID = (65535 - 40 - 7783) // 4
"""14428: the largest netid whose derived P2P ports stay below 65536."""
DEPRECATED_NETIDS = frozenset({7777})


def p2p_ports(netid: int) -> tuple[int, int]:
    """Return ``(tcp, wss)``, the P2P ports KDF derives from ``netid`` (8762 gives 42845, 42855)."""
    # bool is an int subclass; True must not pass as netid 1.
    if isinstance(netid, bool) or not 0 <= netid <= MAX_NETID:
        raise KdfConfigError("netid", netid, f"an integer in 0..{MAX_NETID}")
    base = (netid // 10) * 40 + DEFAULT_RPC_PORT + netid % 10
    return base + 20, base + 30
