"""KDF's P2P port arithmetic (kdf-facts 1.8)."""

from __future__ import annotations

import pytest

from kdf_remote.kdf import KdfConfigError, p2p_ports
from kdf_remote.kdf.ports import MAX_NETID

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("netid", "ports"),
    [(8762, (42845, 42855)), (0, (7803, 7813)), (9, (7812, 7822)), (10, (7843, 7853))],
)
def test_p2p_ports(netid: int, ports: tuple[int, int]) -> None:
    """Ports follow base = (netid/10)*40 + 7783 + netid%10, TCP base+20, WSS base+30."""
    assert p2p_ports(netid) == ports


def test_max_netid_keeps_ports_in_range() -> None:
    """The largest netid gives ports below 65536; one more is rejected."""
    assert MAX_NETID == 14428
    assert max(p2p_ports(MAX_NETID)) <= 65535
    with pytest.raises(KdfConfigError, match="netid"):
        p2p_ports(MAX_NETID + 1)


@pytest.mark.parametrize("netid", [-1, True])
def test_invalid_netid_rejected(netid: int) -> None:
    """Negative netids and booleans are not netids."""
    with pytest.raises(KdfConfigError) as info:
        p2p_ports(netid)
    assert info.value.field == "netid"
