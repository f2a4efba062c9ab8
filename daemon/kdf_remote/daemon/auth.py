"""The authentication seam: every request is resolved to a :class:`Principal` here, or refused.

One gate runs in front of Litestar's router (see :mod:`kdf_remote.daemon.asgi`), so a route
forgotten by a handler author is still closed: deny by default. Only the exact routes in
:data:`PUBLIC_ROUTES` skip it. Handlers then declare the least role they need with
:func:`requires`, a Litestar guard that reads the principal the gate stored in ``scope["user"]``.

The baseline :class:`ApiKeyAuthenticator` checks ``Authorization: Bearer <key>`` or
``X-API-Key: <key>`` against ``security.api_keys`` in constant time, and the peer address
against ``security.allowed_ips``. The security package replaces or wraps it (JWT, rate limits,
signing, audit) by passing another :class:`Authenticator` to ``create_app``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from kdf_remote.daemon.errors import ForbiddenError, UnauthorizedError
from kdf_remote.daemon.principal import Principal, Role

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import Scope

    from kdf_remote.daemon.settings import ApiKeyEntry, IPNetwork, SecuritySection

__all__ = [
    "PUBLIC_ROUTES",
    "ROLE_OPT",
    "ApiKeyAuthenticator",
    "Authenticator",
    "needs",
    "peer_address",
    "peer_allowed",
    "presented_key",
    "principal_of",
    "requires",
]

PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({("GET", "/v1/health")})
"""(method, exact path) pairs reachable without credentials."""

ROLE_OPT = "required_role"
"""Key of a handler's ``opt`` holding the role its guard requires (read by tests and audit)."""

_AUTHORIZATION = b"authorization"
_API_KEY = b"x-api-key"


class Authenticator(Protocol):
    """Resolves one request to its principal."""

    def check_peer(self, scope: Scope) -> None:
        """Refuse a peer that may not reach the daemon at all, even its public routes.

        Raises:
            Forbidden: the peer is not allowed (403).
        """
        ...

    async def authenticate(self, scope: Scope) -> Principal:
        """Return who is calling.

        Raises:
            UnauthorizedError: no or invalid credentials (401).
            ForbiddenError: the peer may not call at all (403).
        """
        ...


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def presented_key(scope: Scope) -> bytes | None:
    """The API key the caller sent, from ``Authorization: Bearer`` or ``X-API-Key``."""
    authorization = _header(scope, _AUTHORIZATION)
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            raise UnauthorizedError("unsupported Authorization scheme: use 'Bearer <key>'")
        return credentials.strip() or None
    api_key = _header(scope, _API_KEY)
    return api_key.strip() if api_key is not None and api_key.strip() else None


def peer_address(scope: Scope) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The TCP peer of the request (never a forwarded header), IPv4-mapped IPv6 unwrapped."""
    client = scope.get("client")
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_allowed(scope: Scope, allowed: Sequence[IPNetwork]) -> bool:
    """True when ``allowed`` is empty or holds the request's peer."""
    if not allowed:
        return True
    address = peer_address(scope)
    return address is not None and any(address in network for network in allowed)


class ApiKeyAuthenticator:
    """Baseline authentication: static API keys and the peer allow-list."""

    def __init__(
        self,
        keys: Sequence[ApiKeyEntry],
        *,
        allowed_ips: Sequence[IPNetwork] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = tuple(keys)
        self._allowed_ips = tuple(allowed_ips)
        self._clock = clock

    @classmethod
    def from_settings(cls, security: SecuritySection) -> ApiKeyAuthenticator:
        """Build from the ``security:`` section."""
        return cls(security.api_keys, allowed_ips=security.allowed_ips)

    def check_peer(self, scope: Scope) -> None:
        """Refuse peers outside ``security.allowed_ips``.

        Raises:
            ForbiddenError: the peer is not allowed.
        """
        if not peer_allowed(scope, self._allowed_ips):
            raise ForbiddenError("this address may not use the daemon", code="ip_not_allowed")

    def match(self, key: bytes) -> ApiKeyEntry | None:
        """The entry whose key is ``key``, compared in constant time across all entries."""
        digest = hashlib.sha256(key).digest()
        found: ApiKeyEntry | None = None
        # Every entry is compared so the time taken does not depend on which one matches.
        for entry in self._keys:
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found

    async def authenticate(self, scope: Scope) -> Principal:
        """Resolve the request's API key to a principal (see :class:`Authenticator`)."""
        self.check_peer(scope)
        key = presented_key(scope)
        if key is None:
            raise UnauthorizedError(
                "missing credentials: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        entry = self.match(key)
        if entry is None:
            raise UnauthorizedError("invalid API key")
        if entry.expired(self._clock()):
            raise UnauthorizedError(f"API key {entry.name!r} has expired", code="key_expired")
        return Principal(name=entry.name, role=entry.role, key_id=entry.name)


def principal_of(scope: Scope | dict[str, Any]) -> Principal | None:
    """The principal the gate stored for this request, if any."""
    user = scope.get("user")
    return user if isinstance(user, Principal) else None


Guard = Callable[["ASGIConnection[Any, Any, Any, Any]", "BaseRouteHandler"], None]


def requires(role: Role) -> Guard:
    """A Litestar guard admitting principals whose role includes ``role``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection.scope)
        if principal is None:
            raise UnauthorizedError("missing credentials")
        if not principal.role.allows(role):
            raise ForbiddenError(
                f"role {principal.role.label!r} may not do this; it needs {role.label!r}",
                code="role_required",
            )

    guard.__name__ = f"requires_{role.label}"
    return guard


def needs(role: Role) -> dict[str, Any]:
    """Route-handler keywords declaring that ``role`` is required (guard plus ``opt`` marker)."""
    return {"guards": [requires(role)], "opt": {ROLE_OPT: role}}
