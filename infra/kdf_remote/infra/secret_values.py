"""Pure transformations of Pulumi-generated secret material.

The random values themselves come from pulumi-random / pulumi-tls (so they live, encrypted, in
the stack state); these functions only derive what the server needs from them. Callers apply
them inside ``Output.apply`` on secret outputs, which keeps the results secret.

KDF's ``rpc_password`` is deliberately absent: the daemon generates one per instance on its first
start and keeps it 0600 in its state directory, so it never exists outside the server.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "API_KEY_PREFIX",
    "API_KEY_RANDOM_CHARS",
    "JWT_KEY_BYTES",
    "api_key_from_random",
    "api_key_hash",
]

API_KEY_PREFIX = "kdfr_"
API_KEY_RANDOM_CHARS = 43
"""Alphanumeric characters after the prefix: 43 * log2(62) > 256 bits, the daemon's own key size.
The result matches the daemon's key format (``kdfr_`` + 43 URL-safe characters)."""
_RANDOM_PART = re.compile(rf"^[A-Za-z0-9]{{{API_KEY_RANDOM_CHARS}}}$")

JWT_KEY_BYTES = 64
"""Twice the 32 bytes RFC 7518 demands of an HS256 key; delivered as raw bytes, which the daemon
accepts as its key file."""


def api_key_from_random(raw: str) -> str:
    """The deploy API key from pulumi-random's alphanumeric result: ``kdfr_<43 characters>``."""
    if not _RANDOM_PART.match(raw):
        raise ValueError(
            f"the random part of an API key must be {API_KEY_RANDOM_CHARS} letters and digits"
        )
    return API_KEY_PREFIX + raw


def api_key_hash(api_key: str) -> str:
    """The ``key_hash`` entry of the daemon config: ``sha256:<hex>`` of the key's UTF-8 bytes."""
    if not api_key:
        raise ValueError("an API key cannot be empty")
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()
