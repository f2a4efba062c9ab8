"""Errors of the security package.

Exception tree::

    SecurityError                 anything the security layer refuses or cannot do
    ├── SecurityConfigError       start-up refused: names the setting, its value, the expectation
    ├── KeystoreError             the keys file cannot be read or changed as asked
    ├── CredentialError        an API key or token is not (or no longer) valid; ``reason``
    ├── SignatureError         a signed request failed verification; ``reason``
    ├── AuditLogError             the audit log cannot be written or read
    └── CertificateError          ``tls init`` cannot produce what was asked

The REST layer turns rejections into the daemon's ``{"error", "detail"}`` bodies; the reasons
here are safe to show (they never contain a credential).
"""

from __future__ import annotations

__all__ = [
    "AuditLogError",
    "CertificateError",
    "CredentialError",
    "KeystoreError",
    "SecurityConfigError",
    "SecurityError",
    "SignatureError",
]


class SecurityError(Exception):
    """Base of every error raised by ``kdf_remote.daemon.security``."""


class SecurityConfigError(SecurityError):
    """Security settings or key material that the daemon must refuse to start with.

    Attributes:
        field: the setting, e.g. ``security.jwt.key_file``.
        value: what was found (a path or a description, never key material).
        expected: what would have been accepted.
    """

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}: got {value!r}, expected {expected}")


class KeystoreError(SecurityError):
    """The keys file is unreadable, malformed, or the requested change is not possible."""


class CredentialError(SecurityError):
    """A presented API key or access token is not valid.

    ``reason`` is short and safe to return to the caller (e.g. ``token expired``). ``guess`` is
    False when the credential was genuine but is no longer usable (expired, revoked): such
    failures do not count toward the lock-out, which exists to stop guessing.
    """

    def __init__(self, reason: str, *, guess: bool = True) -> None:
        self.reason = reason
        self.guess = guess
        super().__init__(reason)


class SignatureError(SecurityError):
    """A request signature is malformed, stale, replayed or wrong; ``reason`` says which.

    ``guess`` is False for failures an honest client can cause (a skewed clock, a full nonce
    cache); those do not count toward the lock-out.
    """

    def __init__(self, reason: str, *, guess: bool = True) -> None:
        self.reason = reason
        self.guess = guess
        super().__init__(reason)


class AuditLogError(SecurityError):
    """The audit log cannot be opened, appended to or read."""


class CertificateError(SecurityError):
    """Certificates cannot be generated as asked (bad SAN, files already present, ...)."""
