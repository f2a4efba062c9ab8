"""TLS for the daemon's listener: Mozilla "intermediate" settings, and how uvicorn gets them.

Mozilla intermediate (guidelines 5.7/6.0): TLS 1.2 and 1.3 only; TLS 1.2 limited to the six
ECDHE + AEAD suites below; TLS 1.3 suites are OpenSSL's defaults (AES-GCM and ChaCha20-Poly1305),
which already match; the client's cipher order is honoured; no compression, no renegotiation.
uvicorn's own context would use Python's default cipher string, which still admits CBC suites,
so the daemon hands uvicorn this context through ``ssl_context_factory`` (uvicorn >= 0.35); see
:func:`kdf_remote.daemon.server.build_server_config`, the one place uvicorn is configured. It
also runs uvicorn with ``proxy_headers=False``: uvicorn would otherwise rewrite the peer address
from ``X-Forwarded-For`` for any peer in ``forwarded_allow_ips`` (127.0.0.1 by default) before
the security layer can judge it.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from kdf_remote.daemon.security.errors import SecurityConfigError
from kdf_remote.daemon.security.files import check_private_file

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "HSTS_VALUE",
    "MOZILLA_INTERMEDIATE_CIPHERS",
    "build_server_ssl_context",
    "check_listen_address",
    "is_loopback_host",
    "ssl_context_factory",
]

MOZILLA_INTERMEDIATE_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
HSTS_VALUE: Final = "max-age=63072000"
"""Two years, Mozilla's recommendation. No ``includeSubDomains``: the daemon owns one name."""


def build_server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with Mozilla intermediate settings, loaded with ``cert`` and ``key``.

    Raises:
        SecurityConfigError: the key file is readable by others, or the pair cannot be loaded.
    """
    check_private_file(key, field="security.ssl.key_path")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(MOZILLA_INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    # Tickets would be encrypted under a key that lives as long as the process: no forward
    # secrecy for resumed sessions. The daemon's clients keep connections alive instead.
    context.options |= ssl.OP_NO_TICKET
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        raise SecurityConfigError(
            "security.ssl", f"cert {cert}, key {key}", f"a matching PEM certificate and key ({exc})"
        ) from None
    return context


def ssl_context_factory(
    cert: Path, key: Path
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """uvicorn's ``ssl_context_factory``: ignores uvicorn's default and returns ours."""

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return build_server_ssl_context(cert, key)

    return factory


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, *, tls: bool) -> None:
    """Refuse plain HTTP on anything but loopback.

    Raises:
        SecurityConfigError: ``host`` is not loopback and TLS is off.
    """
    if not tls and not is_loopback_host(host):
        raise SecurityConfigError(
            "daemon.host",
            host,
            "127.0.0.1 or ::1 when security.ssl is not set (plain HTTP only on loopback); "
            "set security.ssl (see `kdf-remote-daemon tls init`) to listen elsewhere",
        )
