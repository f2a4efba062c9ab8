"""How the daemon's handlers declare who may call them.

Authentication happens before any handler runs, in the security gate
(:class:`~kdf_remote.daemon.security.middleware.SecurityMiddleware`, put in front of everything
by :class:`~kdf_remote.daemon.asgi.DaemonApp`): it resolves the caller to a
:class:`~kdf_remote.daemon.principal.Principal` in ``scope["user"]`` or refuses the request.
Only the exact routes in :data:`PUBLIC_ROUTES` are served without one.

Handlers then declare the least role they need with ``**needs(Role.OPERATOR)``: the security
package's role guard, plus an ``opt`` marker that tests, OpenAPI and the audit read. A handler
that declares nothing is refused (deny by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kdf_remote.daemon.principal import Principal, Role
from kdf_remote.daemon.security.guards import ROLE_OPT, require_role
from kdf_remote.daemon.security.runtime import DEFAULT_PUBLIC_ROUTES

__all__ = ["PUBLIC_ROUTES", "ROLE_OPT", "needs", "principal_of"]

PUBLIC_ROUTES: Final = DEFAULT_PUBLIC_ROUTES
"""(method, exact path) pairs served without credentials: ``GET``/``HEAD /v1/health``."""


def needs(role: Role) -> dict[str, Any]:
    """Route-handler keywords declaring that ``role`` is required (guard plus ``opt`` marker)."""
    return {"guards": [require_role(role)], "opt": {ROLE_OPT: role}}


def principal_of(scope: Mapping[str, Any]) -> Principal | None:
    """The principal the security gate stored for this request, if it authenticated one."""
    user = scope.get("user")
    return user if isinstance(user, Principal) else None
