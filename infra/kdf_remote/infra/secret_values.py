"""Pure transformations of Pulumi-generated secret material.

The random values themselves come from pulumi-random / pulumi-tls (so they live, encrypted, in
the stack state); these functions only derive what the server needs from them. Callers apply
them inside ``Output.apply`` on secret outputs, which keeps the results secret.
"""

from __future__ import annotations

import hashlib

from kdf_remote.kdf.password import check_password

__all__ = [
    "API_KEY_LENGTH",
    "JWT_KEY_BYTES",
    "MIN_RANDOM_CHARS",
    "api_key_hash",
    "kdf_rpc_password",
]

API_KEY_LENGTH = 48
JWT_KEY_BYTES = 64
"""Twice the 32 bytes RFC 7518 demands of an HS256 key."""

_POLICY_PAD = "Aa1@"
MIN_RANDOM_CHARS = 12
"""Characters left after run removal; Pulumi generates 32, so only a broken generator trips this."""


def api_key_hash(api_key: str) -> str:
    """The ``key_hash`` entry of the daemon config: ``sha256:<hex>`` of the key's UTF-8 bytes."""
    if not api_key:
        raise ValueError("an API key cannot be empty")
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()


def kdf_rpc_password(raw: str) -> str:
    """Turn random characters into an rpc_password KDF accepts (kdf-facts 1.6).

    A random string can hold three equal characters in a row, or miss a character class; KDF then
    exits at start-up. Runs are broken by dropping the third equal character, and one character
    of each class is appended, so the result keeps almost all of the input's entropy.
    """
    kept: list[str] = []
    for char in raw:
        if len(kept) >= 2 and kept[-1] == char and kept[-2] == char:
            continue
        kept.append(char)
    if len(kept) < MIN_RANDOM_CHARS:
        raise ValueError("the random input is too short or too repetitive for an rpc_password")
    password = "".join(kept) + _POLICY_PAD
    # The pad could extend a trailing run of "A"s; dropping repeats once more settles it.
    cleaned: list[str] = []
    for char in password:
        if len(cleaned) >= 2 and cleaned[-1] == char and cleaned[-2] == char:
            continue
        cleaned.append(char)
    result = "".join(cleaned)
    problem = check_password(result)
    if problem is not None:
        raise ValueError(f"generated rpc_password is not usable: {problem}")
    return result
