"""Durations, sizes and port ranges of the daemon configuration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdf_remote.daemon.units import (
    PortRange,
    format_duration,
    format_size,
    parse_duration,
    parse_port_range,
    parse_size,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("1.5s", 1.5), ("45", 45.0)],
)
def test_durations(text: str, seconds: float) -> None:
    """Each suffix scales to seconds; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "10 minutes", "-1s", "1d", "1e3s"])
def test_bad_durations(text: str) -> None:
    """Anything but a number with ms|s|m|h is refused with the expectation."""
    with pytest.raises(ValueError, match="a duration such as"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [("512K", 512 * 1024), ("10M", 10 * 1024**2), ("8G", 8 * 1024**3), ("7", 7)]
)
def test_sizes(text: str, size: int) -> None:
    """K, M, G are powers of 1024; a bare number is bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1T", "1.5M", "-1"])
def test_bad_sizes(text: str) -> None:
    """Fractions, unknown suffixes and negatives are refused."""
    with pytest.raises(ValueError, match="a size such as"):
        parse_size(text)


def test_port_ranges() -> None:
    """A-B is inclusive; reversed or out-of-bounds ranges are refused."""
    ports = parse_port_range("9000-9010")
    assert ports == PortRange(9000, 9010)
    assert len(ports) == 11
    assert 9010 in ports
    assert 9011 not in ports
    for bad in ("9010-9000", "80-90", "9000", "9000-70000"):
        with pytest.raises(ValueError, match="a port range"):
            parse_port_range(bad)


@given(st.integers(min_value=1, max_value=10**6))
def test_durations_round_trip(seconds: int) -> None:
    """Formatting a whole number of seconds and parsing it back is the identity."""
    assert parse_duration(format_duration(float(seconds))) == seconds


@given(st.integers(min_value=1, max_value=2**40))
def test_sizes_round_trip(size: int) -> None:
    """Formatting a size and parsing it back is the identity."""
    assert parse_size(format_size(size)) == size
