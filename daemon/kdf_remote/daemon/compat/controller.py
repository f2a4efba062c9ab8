"""``GET /v1/instances/{name}/kdf-compat``: what an SDK app's ``RemoteConfig`` needs (admin).

The ``kdf_compat`` listener authenticates SDK apps with the instance's ``rpc_password``, which
no other route returns. An admin gets it here, with the listener's URL, to configure an app
(``kdf-remote profile show --show-secret`` prints it). Every call is audited, successful or not;
the response is never cached (the security gate marks every response ``no-store``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from kdf_remote.daemon.auth import needs, principal_of
from kdf_remote.daemon.errors import ApiError, ConflictError, NotFoundError
from kdf_remote.daemon.openapi import error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.errors import AuditLogError
from kdf_remote.daemon.security.middleware import RUNTIME_KEY, auth_context_of
from kdf_remote.daemon.security.runtime import SecurityRuntime
from kdf_remote.daemon.services import InstanceService
from kdf_remote.supervisor import errors as sup_errors

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import Settings

__all__ = ["KdfCompatController", "KdfCompatOut", "compat_endpoint"]

ACTION = "GET /v1/instances/{name}/kdf-compat"


class KdfCompatOut(msgspec.Struct, frozen=True, kw_only=True):
    """The SDK's ``RemoteConfig`` values for the ``kdf_compat`` listener, and its URL."""

    url: str
    """``http(s)://ip_address:port``, the ``rpcUrl`` the SDK builds."""
    ip_address: str
    """The host the admin reached the daemon at (an address or a DNS name)."""
    port: int
    https: bool
    rpc_password: str
    """The instance's ``rpc_password``: an SDK app sends it as ``userpass``."""

    def __repr__(self) -> str:
        return f"KdfCompatOut(url={self.url!r}, rpc_password='***')"


def _host_of(request: Request[Any, Any, Any], fallback: str) -> str:
    """The host name or address the caller used (``Host`` header), else ``fallback``."""
    header = request.headers.get("host")
    if header:
        try:
            host = urlsplit(f"//{header}").hostname
        except ValueError:
            host = None
        if host:
            return host
    return fallback


def compat_endpoint(settings: Settings, host: str) -> tuple[str, int, bool]:
    """``(url, port, https)`` of the listener as reached at ``host``.

    Raises:
        NotFoundError: ``kdf_compat`` is not enabled.
    """
    compat = settings.kdf_compat
    if not compat.enabled or compat.port is None:
        raise NotFoundError(
            "the kdf_compat listener is not enabled on this daemon (kdf_compat.enabled)",
            code="kdf_compat_disabled",
        )
    https = settings.security.ssl is not None
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if https else 'http'}://{shown}:{compat.port}", compat.port, https


def _stored_password(service: InstanceService, name: str) -> str:
    try:
        password = service.supervisor.stored_config(name).rpc_password
    except sup_errors.SupervisorError:
        password = None
    if not password:
        raise ConflictError(
            f"instance {name!r} has no stored config with an rpc_password yet: start it once",
            code="no_stored_config",
        )
    return password


def _audit(request: Request[Any, Any, Any], name: str, status: int, detail: str) -> None:
    runtime = request.scope.get(RUNTIME_KEY)
    if not isinstance(runtime, SecurityRuntime):
        return
    principal = principal_of(request.scope)
    auth = auth_context_of(request.scope)
    try:
        runtime.audit.append(
            action=ACTION,
            outcome="ok" if status < 400 else "failed",
            actor=principal.name if principal is not None else None,
            role=principal.role.label if principal is not None else None,
            key_id=principal.key_id if principal is not None else None,
            source_ip=auth.client_ip if auth is not None else None,
            target=name,
            status=status,
            detail=detail,
        )
    except AuditLogError:
        # A disclosure that cannot be recorded must not happen.
        raise ApiError("the audit log cannot be written", code="audit_unavailable") from None


class KdfCompatController(Controller):
    """``/v1/instances/{name}/kdf-compat``."""

    path = "/v1/instances"
    tags = ["kdf_compat"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/{name:str}/kdf-compat",
        operation_id="getKdfCompat",
        summary="RemoteConfig values (with the rpc_password) for the KDF-compatible listener",
        description=(
            "Admin only, audited. The URL, address, port, TLS flag and rpc_password an app built "
            "on the Komodo DeFi SDK puts in its RemoteConfig to reach this instance through the "
            "kdf_compat listener. 404 when the listener is disabled or fronts another instance; "
            "409 when the instance has no stored config yet."
        ),
        responses=error_responses(400, 401, 403, 404, 409),
        **needs(Role.ADMIN),
    )
    async def kdf_compat(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        service: NamedDependency[InstanceService],
    ) -> KdfCompatOut:
        """The listener's ``RemoteConfig`` values for ``name``."""
        try:
            service.status(name)
            settings = service.settings
            url, port, https = compat_endpoint(settings, _host_of(request, settings.daemon.host))
            fronted = settings.kdf_compat.instance
            if name != fronted:
                raise NotFoundError(
                    f"the kdf_compat listener fronts instance {fronted!r}, not {name!r}",
                    code="not_fronted",
                )
            password = _stored_password(service, name)
        except ApiError as exc:
            _audit(request, name, exc.status, f"{exc.code}: {exc.detail}")
            raise
        _audit(request, name, 200, "kdf_compat rpc_password disclosed")
        return KdfCompatOut(
            url=url,
            ip_address=urlsplit(url).hostname or url,
            port=port,
            https=https,
            rpc_password=password,
        )
