"""What would stop the daemon from starting, found without starting it (``check-config``).

Each check calls the same function the daemon calls at start-up (JWT key, keys file, revoked
tokens file, audit log, TLS context, listen address), so ``check-config`` and a real start can
never disagree. Nothing is created or changed: a missing audit log is fine (the daemon creates it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdf_remote.daemon.security.errors import SecurityConfigError
from kdf_remote.daemon.security.files import check_private_file
from kdf_remote.daemon.security.keystore import KeyStore, record_from_entry
from kdf_remote.daemon.security.runtime import REVOKED_TOKENS_FILE, plain_key_warnings
from kdf_remote.daemon.security.tls import build_server_ssl_context, check_listen_address
from kdf_remote.daemon.security.tokens import RevokedTokens, TokenPolicy, load_jwt_key

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import SecuritySection, Settings

__all__ = ["SecurityReport", "check_security"]


@dataclass(frozen=True)
class SecurityReport:
    """What ``check_security`` found."""

    errors: list[str]
    """Problems the daemon refuses to start with, each naming the setting and the value."""
    warnings: list[str]
    """Advice that does not stop the start (plain keys in the YAML)."""


def _checks(settings: Settings) -> list[Callable[[], object]]:
    security: SecuritySection = settings.security
    ssl = security.ssl
    checks: list[Callable[[], object]] = [
        lambda: check_listen_address(settings.daemon.host, tls=ssl is not None),
        lambda: load_jwt_key(security.jwt.key_file),
        lambda: TokenPolicy(
            issuer=security.jwt.issuer, audience=security.jwt.audience, ttl=security.jwt.ttl
        ).validate(),
        lambda: KeyStore(
            (record_from_entry(entry) for entry in security.api_keys), security.keys_file
        ),
        lambda: RevokedTokens(security.keys_file.with_name(REVOKED_TOKENS_FILE)),
    ]
    if security.audit_log.exists():
        checks.append(lambda: check_private_file(security.audit_log, field="security.audit_log"))
    if ssl is not None:
        checks.append(lambda: build_server_ssl_context(ssl.cert_path, ssl.key_path))
    return checks


def check_security(settings: Settings) -> SecurityReport:
    """Run every start-up check of the security layer on ``settings``; never raises for them."""
    errors: list[str] = []
    for check in _checks(settings):
        try:
            check()
        except SecurityConfigError as exc:
            errors.append(str(exc))
    return SecurityReport(errors=errors, warnings=plain_key_warnings(settings.security))
