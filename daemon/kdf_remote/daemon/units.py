"""Parsers for the human units of the daemon configuration: durations, sizes, port ranges.

Each parser takes the text an operator wrote and raises ``ValueError`` whose message says what
was expected; the settings loader adds the key, the value and the line.
"""

from __future__ import annotations

import re

import msgspec

__all__ = [
    "DURATION_EXPECTED",
    "PORT_RANGE_EXPECTED",
    "SIZE_EXPECTED",
    "PortRange",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_port_range",
    "parse_size",
]

DURATION_EXPECTED = "a duration such as 500ms, 30s, 10m or 1h"
SIZE_EXPECTED = "a size such as 512K, 10M or 1G (bytes when no suffix)"
PORT_RANGE_EXPECTED = "a port range such as 9000-9010"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_FACTOR = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG])?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_PORT_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class PortRange(msgspec.Struct, frozen=True):
    """An inclusive range of TCP ports."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_duration(value: str | float) -> float:
    """Return seconds for ``30s``-style text; a bare number means seconds.

    Raises:
        ValueError: not a duration.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(DURATION_EXPECTED)
        seconds = float(match.group(1)) * _DURATION_FACTOR[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError(DURATION_EXPECTED)
    return seconds


def parse_size(value: str | int) -> int:
    """Return bytes for ``10M``-style text (K, M, G are powers of 1024); a bare number is bytes.

    Raises:
        ValueError: not a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(SIZE_EXPECTED)
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(SIZE_EXPECTED)
    return int(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "").upper()]


def parse_port_range(value: str, *, low: int = 1024, high: int = 65535) -> PortRange:
    """Return the range ``A-B`` with ``low <= A <= B <= high``.

    Raises:
        ValueError: not a range, or out of bounds.
    """
    match = _PORT_RANGE.match(value)
    if match is None:
        raise ValueError(PORT_RANGE_EXPECTED)
    first, last = int(match.group(1)), int(match.group(2))
    if not low <= first <= last <= high:
        raise ValueError(f"{PORT_RANGE_EXPECTED}, with {low} <= first <= last <= {high}")
    return PortRange(first, last)


def format_duration(seconds: float) -> str:
    """Render seconds back in the configuration's units (for messages and ``check-config``)."""
    for suffix, factor in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds / factor)}{suffix}"
    return f"{round(seconds * 1000)}ms"


def format_size(size: int) -> str:
    """Render bytes back in the configuration's units."""
    for suffix, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)
