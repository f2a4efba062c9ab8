"""Everything the security layer holds while the daemon runs, built once from ``security:``.

:class:`SecurityRuntime` is framework-free: the ASGI middleware, the guards and the controllers
only call it. Building it is where weak settings stop the daemon (missing or weak JWT key, unsafe
keys file, plain HTTP off loopback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from kdf_remote.daemon.principal import Principal
from kdf_remote.daemon.security.audit import AuditLog, AuditThrottle
from kdf_remote.daemon.security.errors import CredentialError, SecurityConfigError
from kdf_remote.daemon.security.hosts import HostAllowList
from kdf_remote.daemon.security.ipaccess import IpAllowList, IPNetwork, NetworkSet
from kdf_remote.daemon.security.keystore import (
    KeyRecord,
    KeyStore,
    derive_signing_key,
    record_from_entry,
)
from kdf_remote.daemon.security.ratelimit import FailureLockout, TokenBucketLimiter
from kdf_remote.daemon.security.signing import NonceCache, SignatureVerifier
from kdf_remote.daemon.security.tokens import (
    RevokedTokens,
    TokenClaims,
    TokenPolicy,
    TokenService,
    load_jwt_key,
    looks_like_jwt,
)

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import SecuritySection

__all__ = [
    "DEFAULT_PUBLIC_ROUTES",
    "Authenticated",
    "RateLimits",
    "SecurityPolicy",
    "SecurityRuntime",
    "plain_key_warnings",
]

log = logging.getLogger("kdf_remote.daemon.security")

DEFAULT_PUBLIC_ROUTES: Final = frozenset({("GET", "/v1/health"), ("HEAD", "/v1/health")})
REVOKED_TOKENS_FILE: Final = "revoked_tokens.json"


class RateLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers behind the limiters (``security.rate_limit``)."""

    requests_per_minute: int = 600
    """Per client address and, separately, per credential."""
    auth_per_minute: int = 10
    """Per client address on the token endpoint."""
    lockout_after: int = 5
    """Failed authentications from one address that trigger a lock-out."""
    lockout: float = 900.0
    """Seconds a locked-out address waits; also the window failures are counted over."""

    def validate(self) -> None:
        """Raises SecurityConfigError naming the bad setting."""
        for field, value in (
            ("requests_per_minute", self.requests_per_minute),
            ("auth_per_minute", self.auth_per_minute),
            ("lockout_after", self.lockout_after),
        ):
            if value < 1:
                raise SecurityConfigError(f"security.rate_limit.{field}", value, "at least 1")
        if self.lockout <= 0:
            raise SecurityConfigError("security.rate_limit.lockout", self.lockout, "a duration > 0")


class SecurityPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Request-level rules the middleware applies."""

    api_prefix: str = "/v1"
    public_routes: frozenset[tuple[str, str]] = DEFAULT_PUBLIC_ROUTES
    """(method, exact path) pairs served without credentials."""
    max_body_size: int = 1024**2
    signing_required_for_admin: bool = False

    @property
    def token_path(self) -> str:
        """``POST`` here exchanges an API key for a token (stricter limits, API key only)."""
        return f"{self.api_prefix}/auth/token"


class Authenticated(msgspec.Struct, frozen=True, kw_only=True):
    """A request's accepted credential."""

    principal: Principal
    record: KeyRecord
    claims: TokenClaims | None = None
    """Set when the credential was a JWT."""


class SecurityRuntime:
    """The security layer's state: keys, tokens, limiters, signatures, audit.

    Use :meth:`from_settings` in the daemon; the constructor takes ready parts (tests).
    """

    def __init__(
        self,
        *,
        keys: KeyStore,
        tokens: TokenService,
        audit: AuditLog,
        policy: SecurityPolicy,
        limits: RateLimits,
        allowed_ips: Iterable[IPNetwork] = (),
        allowed_hosts: Iterable[str] = (),
        trusted_proxies: Iterable[IPNetwork] = (),
        signing_window: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        limits.validate()
        if policy.max_body_size < 1:
            raise SecurityConfigError("security.max_body_size", policy.max_body_size, "> 0")
        if signing_window <= 0:
            raise SecurityConfigError("security.signing.window", signing_window, "> 0")
        self.keys = keys
        self.tokens = tokens
        self.audit = audit
        self.policy = policy
        self.limits = limits
        self.allow_list = IpAllowList(allowed_ips)
        self.host_list = HostAllowList(allowed_hosts)
        self.trusted_proxies = NetworkSet(trusted_proxies)
        self.ip_limiter = TokenBucketLimiter(
            rate=limits.requests_per_minute / 60.0,
            burst=max(1, limits.requests_per_minute // 4),
            clock=monotonic,
        )
        self.key_limiter = TokenBucketLimiter(
            rate=limits.requests_per_minute / 60.0,
            burst=max(1, limits.requests_per_minute // 4),
            clock=monotonic,
        )
        self.auth_limiter = TokenBucketLimiter(
            rate=limits.auth_per_minute / 60.0, burst=limits.auth_per_minute, clock=monotonic
        )
        self.lockout = FailureLockout(
            max_failures=limits.lockout_after,
            lockout=limits.lockout,
            window=limits.lockout,
            clock=monotonic,
        )
        self.signatures = SignatureVerifier(
            window=signing_window, nonces=NonceCache(clock=monotonic), wall_clock=wall_clock
        )
        self.audit_throttle = AuditThrottle(clock=monotonic)

    @classmethod
    def from_settings(
        cls,
        security: SecuritySection,
        *,
        api_prefix: str = "/v1",
        public_routes: frozenset[tuple[str, str]] = DEFAULT_PUBLIC_ROUTES,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> SecurityRuntime:
        """Build from the validated ``security:`` section.

        Raises:
            SecurityConfigError: missing/weak JWT key, unsafe keys/audit files, bad numbers.
        """
        jwt_key = load_jwt_key(security.jwt.key_file)
        for warning in plain_key_warnings(security):
            log.warning("%s", warning)
        keys = KeyStore(
            (record_from_entry(entry) for entry in security.api_keys),
            security.keys_file,
            wall_clock=wall_clock,
            monotonic=monotonic,
        )
        if not keys.records():
            log.warning(
                "no API keys configured: every request will be refused until one is added "
                "with `kdf-remote-daemon keys add`"
            )
        revoked = RevokedTokens(_revoked_path(security.keys_file), wall_clock=wall_clock)
        policy = TokenPolicy(
            issuer=security.jwt.issuer, audience=security.jwt.audience, ttl=security.jwt.ttl
        )
        tokens = TokenService(jwt_key, policy, revoked, wall_clock=wall_clock)
        rate = security.rate_limit
        return cls(
            keys=keys,
            tokens=tokens,
            audit=AuditLog(security.audit_log, wall_clock=wall_clock),
            policy=SecurityPolicy(
                api_prefix=api_prefix,
                public_routes=public_routes,
                max_body_size=security.max_body_size,
                signing_required_for_admin=security.signing.required_for_admin,
            ),
            limits=RateLimits(
                requests_per_minute=rate.requests_per_minute,
                auth_per_minute=rate.auth_per_minute,
                lockout_after=rate.lockout_after,
                lockout=rate.lockout,
            ),
            allowed_ips=security.allowed_ips,
            allowed_hosts=security.allowed_hosts,
            trusted_proxies=security.trusted_proxies,
            signing_window=security.signing.window,
            monotonic=monotonic,
            wall_clock=wall_clock,
        )

    def authenticate(self, credential: str, *, allow_token: bool = True) -> Authenticated:
        """Resolve an API key or (when ``allow_token``) an access token.

        Raises:
            CredentialError: with a reason safe to return.
        """
        if looks_like_jwt(credential):
            if not allow_token:
                raise CredentialError("an API key is required here, not an access token")
            claims = self.tokens.verify(credential)
            record = self.keys.get(claims.key_id)
            if record is None or record.name != claims.subject:
                raise CredentialError(
                    "the key that issued this token was revoked or expired", guess=False
                )
            via = "jwt"
        else:
            claims = None
            record = self.keys.lookup(credential)
            via = "api_key"
        principal = Principal(name=record.name, role=record.role, key_id=record.key_id, via=via)
        return Authenticated(principal=principal, record=record, claims=claims)

    @staticmethod
    def signing_key(auth: Authenticated, credential: str) -> bytes | None:
        """The key a signed request is checked with: stored, or derived from the API key sent."""
        if auth.record.signing_key is not None:
            return auth.record.signing_key
        if auth.claims is None:
            return derive_signing_key(credential)
        return None

    def close(self) -> None:
        """Release files (daemon shutdown)."""
        self.audit.close()


def plain_key_warnings(security: SecuritySection) -> list[str]:
    """One warning per API key written in clear in the YAML (named, never shown)."""
    return [
        f"security.api_keys[{index}] (name {entry.name!r}"
        + (f", line {entry.line}" if entry.line is not None else "")
        + "): a plain key in the configuration file; it was hashed on load, but the file still "
        "holds it. Replace it with a key from `kdf-remote-daemon keys add`, or list "
        "`key_hash: sha256:<hex>` instead"
        for index, entry in enumerate(security.api_keys)
        if entry.plain
    ]


def _revoked_path(keys_file: Path) -> Path:
    return keys_file.with_name(REVOKED_TOKENS_FILE)
