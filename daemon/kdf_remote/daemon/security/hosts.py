"""``security.allowed_hosts``: the names the daemon answers to, matched literally.

A request's ``Host`` header (its port dropped) must equal one of the configured names, compared
case-insensitively as plain strings, or end with the suffix of a ``*.example.com`` entry (one or
more labels before it). Nothing here is a pattern: a ``.`` is a dot, so ``kdfXexample.com`` never
matches ``kdf.example.com`` (the regex mistake of CVE-2026-25479). ``X-Forwarded-Host`` is never
read. An empty list admits any host, which is what loopback and IP-only deployments want; a
server reached by DNS name should list it, so a rebinding attack cannot aim a browser at it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["HostAllowList", "check_allowed_host", "host_of"]

_LABEL: Final = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME: Final = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def check_allowed_host(text: str) -> str:
    """The canonical form of one ``allowed_hosts`` entry.

    Accepts a DNS name (``kdf.example.com``), a ``*.``-prefixed name (any subdomain), or an IP
    address (IPv6 without brackets). No port, scheme or path.

    Raises:
        ValueError: naming what was expected.
    """
    candidate = text.strip().lower().rstrip(".")
    try:
        return ipaddress.ip_address(candidate.strip("[]")).compressed
    except ValueError:
        pass
    if not _NAME.match(candidate) or len(candidate) > 253:
        raise ValueError("a host name such as kdf.example.com, *.example.com or an IP address")
    return candidate


def host_of(header: bytes | None) -> str | None:
    """The host named by a ``Host`` header value, without its port; None when unusable."""
    if header is None:
        return None
    try:
        text = header.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        inside, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
        try:
            return ipaddress.IPv6Address(inside).compressed
        except ValueError:
            return None
    name, colon, port = text.partition(":")
    if colon and not port.isdigit():
        return None
    name = name.rstrip(".")
    if not name:
        return None
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


class HostAllowList:
    """The configured names; :meth:`allows` decides one request's ``Host``."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._exact: frozenset[str] = frozenset()
        self._suffixes: tuple[str, ...] = ()
        exact: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            canonical = check_allowed_host(entry)
            if canonical.startswith("*."):
                suffixes.append(canonical[1:])  # ".example.com"
            else:
                exact.add(canonical)
        self._exact = frozenset(exact)
        self._suffixes = tuple(suffixes)

    @property
    def restricted(self) -> bool:
        """True when a list is configured."""
        return bool(self._exact or self._suffixes)

    def allows(self, header: bytes | None) -> bool:
        """Whether a request with this ``Host`` header value may be served."""
        if not self.restricted:
            return True
        host = host_of(header)
        if host is None:
            return False
        if host in self._exact:
            return True
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self._suffixes)
