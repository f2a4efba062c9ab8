"""Who is calling: roles and the resolved principal of one request.

Kept apart from ``auth`` so that settings, guards and the security package can share the role
vocabulary without importing the authentication machinery.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Principal", "Role"]


class Role(enum.IntEnum):
    """Roles of design.md's REST table, ordered so that a higher role includes the lower ones."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        """Return the role named ``text`` (``viewer``, ``operator`` or ``admin``).

        Raises:
            ValueError: ``text`` names no role.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}") from None

    @property
    def label(self) -> str:
        """The lower-case name used in configuration and on the wire."""
        return self.name.lower()

    def allows(self, needed: Role) -> bool:
        """True when this role may do what ``needed`` may."""
        return self >= needed


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller of one request.

    Attributes:
        name: the key's configured name (never the key itself).
        role: what the caller may do.
        key_id: identifies the credential used (for audit and revocation), when known.
        via: how the caller authenticated (``api_key`` for the baseline; the security
            package adds others such as ``jwt``).
    """

    name: str
    role: Role
    key_id: str | None = None
    via: str = "api_key"
