"""KDF's password policy (``mm2src/common/password_policy.rs``) and a generator that satisfies it.

The policy applies to ``rpc_password`` and ``wallet_password`` unless ``allow_weak_password`` is
set. Checks run in KDF's order and the first failure wins, so :func:`check_password` returns the
exact message KDF would log before exiting with code 1.
"""

from __future__ import annotations

import re
import secrets
import string

__all__ = [
    "GENERATED_PASSWORD_LENGTH",
    "MAX_REPEATED_CHARACTERS",
    "MIN_PASSWORD_LENGTH",
    "check_password",
    "generate_rpc_password",
]

MIN_PASSWORD_LENGTH = 8
MAX_REPEATED_CHARACTERS = 3
"""A run of this many identical characters fails (``aa`` passes, ``aaa`` fails)."""
GENERATED_PASSWORD_LENGTH = 32

_DIGIT = re.compile(r"[0-9]")
_LOWER = re.compile(r"[a-z]")
_UPPER = re.compile(r"[A-Z]")
_SPECIAL = re.compile(r"[^A-Za-z0-9]")

# Specials that need no escaping in JSON, URLs, shells or YAML, so a generated password can be
# pasted anywhere without quoting surprises.
_GENERATOR_SPECIALS = "@-_.~"
_GENERATOR_ALPHABET = string.ascii_letters + string.digits + _GENERATOR_SPECIALS


def _has_run(password: str, limit: int) -> bool:
    run = 0
    previous: str | None = None
    for char in password:
        run = run + 1 if char == previous else 1
        if run >= limit:
            return True
        previous = char
    return False


def check_password(password: str) -> str | None:
    """Return KDF's own policy message for ``password``, or None when KDF accepts it.

    Length counts Unicode characters, as KDF does; there is no maximum length.
    """
    if "password" in password.lower():
        return "Password can't contain the word password"
    if len(password) < MIN_PASSWORD_LENGTH:
        return "Password length should be at least 8 characters long"
    if not _DIGIT.search(password):
        return "Password should contain at least 1 digit"
    if not _LOWER.search(password):
        return "Password should contain at least 1 lowercase character"
    if not _UPPER.search(password):
        return "Password should contain at least 1 uppercase character"
    if not _SPECIAL.search(password):
        return "Password should contain at least 1 special character"
    if _has_run(password, MAX_REPEATED_CHARACTERS):
        return "Password can't contain the same character 3 times in a row"
    return None


def generate_rpc_password(length: int = GENERATED_PASSWORD_LENGTH) -> str:
    """Return a random password from :mod:`secrets` that always passes :func:`check_password`.

    Candidates are drawn until one passes; with 67 symbols and 32 characters almost every draw
    does, so the loop ends after one or two rounds.
    """
    if length < MIN_PASSWORD_LENGTH:
        raise ValueError(f"length: got {length}, expected at least {MIN_PASSWORD_LENGTH}")
    while True:
        candidate = "".join(secrets.choice(_GENERATOR_ALPHABET) for _ in range(length))
        if check_password(candidate) is None:
            return candidate
