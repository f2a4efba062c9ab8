"""Litestar guards: each handler declares the least role it needs; undeclared handlers are closed.

- :func:`require_role` (``guards=[require_role("operator")]``) admits principals whose role
  includes that role. Admin handlers also need a signed request when
  ``security.signing.required_for_admin`` is on.
- :func:`enforce_declared_roles` runs on every handler (app-level guard installed by
  :class:`~kdf_remote.daemon.security.plugin.SecurityPlugin`). A handler that declares no role is
  served without credentials only on the gate's public routes (``SecurityPolicy.public_routes``,
  exact method and path, the one list of what is public); anywhere else it is refused with 403.
  Any request the security gate did not pass (the gate was not installed) is refused too. It also
  honours the daemon's ``opt["required_role"]``.
- :func:`undeclared_handlers` lists handlers that declare no role and are not public, for a
  start-up check or a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, cast

from kdf_remote.daemon.errors import ForbiddenError, UnauthorizedError
from kdf_remote.daemon.principal import Principal, Role
from kdf_remote.daemon.security.middleware import RUNTIME_KEY, auth_context_of
from kdf_remote.daemon.security.runtime import DEFAULT_PUBLIC_ROUTES, SecurityRuntime

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = [
    "ROLE_OPT",
    "Guard",
    "check_role",
    "declared_role",
    "enforce_declared_roles",
    "require_role",
    "schema_prefix",
    "undeclared_handlers",
]

ROLE_OPT: Final = "required_role"
"""A handler's ``opt`` key naming its role (the daemon's convention; read by the guards)."""
_ROLE_MARK: Final = "__kdf_required_role__"
_SCHEMA_ROLE: Final = Role.VIEWER

Guard = Callable[["ASGIConnection[Any, Any, Any, Any]", "BaseRouteHandler"], None]


def check_role(connection: ASGIConnection[Any, Any, Any, Any], needed: Role) -> None:
    """Raise unless the request's principal may act with role ``needed`` (see :func:`require_role`).

    Raises:
        UnauthorizedError: no principal (the gate did not authenticate this request).
        ForbiddenError: the role is too low, or an admin action is unsigned when signing is
            required for admin.
    """
    scope = cast("dict[str, Any]", connection.scope)
    user = scope.get("user")
    auth = auth_context_of(scope)
    if not isinstance(user, Principal) or auth is None:
        raise UnauthorizedError("missing credentials")
    if not user.role.allows(needed):
        raise ForbiddenError(
            f"role {user.role.label!r} may not do this; it needs {needed.label!r}",
            code="role_required",
        )
    if needed is Role.ADMIN and auth.signing_required_for_admin and not auth.signed:
        raise ForbiddenError(
            "admin actions require a signed request (X-KDF-Timestamp, X-KDF-Nonce, "
            "X-KDF-Signature)",
            code="signature_required",
        )


def require_role(role: Role | str) -> Guard:
    """A guard admitting principals whose role includes ``role`` (viewer, operator or admin)."""
    needed = role if isinstance(role, Role) else Role.parse(role)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        check_role(connection, needed)

    guard.__name__ = f"require_{needed.label}"
    setattr(guard, _ROLE_MARK, needed)
    return guard


def declared_role(handler: BaseRouteHandler) -> Role | None:
    """The role ``handler`` requires, None when it declares none."""
    roles: list[Role] = []
    # The layers' own guard lists: resolve_guards() wraps sync guards and loses the marks.
    guards = [g for layer in handler.ownership_layers for g in (layer.guards or ())]
    for guard in guards:
        mark = getattr(guard, _ROLE_MARK, None)
        if isinstance(mark, Role):
            roles.append(mark)
    opt_role = handler.opt.get(ROLE_OPT)
    if isinstance(opt_role, Role):
        roles.append(opt_role)
    elif isinstance(opt_role, str):
        roles.append(Role.parse(opt_role))
    return max(roles) if roles else None


def schema_prefix(app: Litestar) -> str | None:
    """Where the OpenAPI document is served (viewers may read it), or None without one."""
    config = app.openapi_config
    if config is None:
        return None
    if config.openapi_router is not None:
        return config.openapi_router.path.rstrip("/") or "/"
    return (config.path or "/schema").rstrip("/") or "/"


def _under(path: str, prefix: str | None) -> bool:
    return prefix is not None and (path == prefix or path.startswith(prefix.rstrip("/") + "/"))


def enforce_declared_roles(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App-level guard: deny by default (see the module docstring)."""
    scope = cast("dict[str, Any]", connection.scope)
    runtime = scope.get(RUNTIME_KEY)
    if not isinstance(runtime, SecurityRuntime):
        raise ForbiddenError("the security layer is not installed", code="forbidden")
    declared = declared_role(handler)
    if declared is None:
        if (scope["method"], scope["path"]) in runtime.policy.public_routes:
            return
        if not _under(scope["path"], schema_prefix(connection.app)):
            raise ForbiddenError("this endpoint declares no role", code="forbidden")
        declared = _SCHEMA_ROLE
    check_role(connection, declared)


def undeclared_handlers(
    app: Litestar, public_routes: frozenset[tuple[str, str]] = DEFAULT_PUBLIC_ROUTES
) -> list[str]:
    """``METHOD path`` of every handler that declares no role and is not in ``public_routes``.

    The OpenAPI schema routes (served to viewers) and Litestar's automatic OPTIONS handlers
    (refused at run time like any undeclared handler) are not listed.
    """
    found: list[str] = []
    prefix = schema_prefix(app)
    for route in app.routes:
        path = route.path
        if _under(path, prefix):
            continue
        handlers: Iterable[BaseRouteHandler] = getattr(route, "route_handlers", ())
        for handler in handlers:
            methods = sorted(getattr(handler, "http_methods", None) or {"WS"})
            if methods == ["OPTIONS"] or declared_role(handler) is not None:
                continue
            found.extend(
                f"{method} {path}" for method in methods if (method, path) not in public_routes
            )
    return found
