"""``POST /v1/auth/token``, ``POST /v1/auth/revoke`` and ``GET /v1/audit``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, cast

from litestar import Controller, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from kdf_remote.daemon.errors import BadRequestError, ErrorBody, UnauthorizedError
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.audit import read_audit_tail
from kdf_remote.daemon.security.guards import check_role, require_role
from kdf_remote.daemon.security.middleware import RUNTIME_KEY, auth_context_of, note_audit
from kdf_remote.daemon.security.runtime import SecurityRuntime
from kdf_remote.daemon.security.schemas import (
    AuditPage,
    RevokeRequest,
    RevokeResponse,
    TokenResponse,
)

__all__ = ["AuditController", "AuthController", "runtime_of"]

MAX_AUDIT_PAGE: Final = 1000
_JTI = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    text = {
        400: "Bad input",
        401: "No or invalid credentials",
        403: "Role, address or signature not sufficient",
        413: "Request body too large",
        429: "Rate limited or locked out (see Retry-After)",
    }
    return {s: ResponseSpec(data_container=ErrorBody, description=text[s]) for s in statuses}


def runtime_of(request: Request[Any, Any, Any]) -> SecurityRuntime:
    """The security runtime the gate attached to this request.

    Raises:
        UnauthorizedError: the gate did not pass this request.
    """
    runtime = cast("dict[str, Any]", request.scope).get(RUNTIME_KEY)
    if not isinstance(runtime, SecurityRuntime):
        raise UnauthorizedError("missing credentials")
    return runtime


class AuthController(Controller):
    """Access tokens."""

    path = "/auth"
    tags = ["auth"]  # noqa: RUF012  # Litestar reads this class attribute

    @post(
        "/token",
        guards=[require_role(Role.VIEWER)],
        status_code=200,
        operation_id="issueToken",
        summary="Exchange an API key for a short-lived access token",
        description="Send the API key as `Authorization: Bearer <key>` or `X-API-Key`; "
        "access tokens are not accepted here.",
        responses=_errors(401, 403, 413, 429),
    )
    async def issue_token(self, request: Request[Any, Any, Any]) -> TokenResponse:
        """Mint a token for the API key that authenticated this request."""
        runtime = runtime_of(request)
        auth = auth_context_of(request.scope)
        record = runtime.keys.get(auth.key_id) if auth is not None else None
        if auth is None or auth.via != "api_key" or record is None:
            raise UnauthorizedError("an API key is required here")
        issued = runtime.tokens.issue(record)
        note_audit(
            request,
            target=record.name,
            detail=f"token {issued.jti} expires in {issued.expires_in}s",
        )
        return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)

    @post(
        "/revoke",
        guards=[require_role(Role.VIEWER)],
        status_code=200,
        operation_id="revokeToken",
        summary="Revoke an access token",
        description="Without `jti`, revokes the access token sent with this request; revoking "
        "another token by `jti` needs the admin role.",
        responses=_errors(400, 401, 403, 429),
    )
    async def revoke_token(
        self, request: Request[Any, Any, Any], data: JSONBody[RevokeRequest]
    ) -> RevokeResponse:
        """Add a token id to the revocation list."""
        runtime = runtime_of(request)
        auth = auth_context_of(request.scope)
        if auth is None:
            raise UnauthorizedError("missing credentials")
        if data.jti is None or data.jti == auth.jti:
            if auth.jti is None or auth.token_expires_at is None:
                raise BadRequestError("no jti given and this request did not use an access token")
            runtime.tokens.revoked.revoke(
                auth.jti, float(auth.token_expires_at) + runtime.tokens.policy.leeway
            )
            revoked = auth.jti
        else:
            check_role(request, Role.ADMIN)
            if _JTI.match(data.jti) is None:
                raise BadRequestError("jti: expected 8-128 URL-safe characters")
            runtime.tokens.revoke_jti(data.jti)
            revoked = data.jti
        note_audit(request, target=revoked)
        return RevokeResponse(revoked=revoked)


class AuditController(Controller):
    """The audit log."""

    path = "/audit"
    tags = ["audit"]  # noqa: RUF012  # Litestar reads this class attribute

    @get(
        "/",
        guards=[require_role(Role.ADMIN)],
        operation_id="listAudit",
        summary="Audit log entries, newest page first",
        responses=_errors(400, 401, 403, 429),
        sync_to_thread=True,
    )
    def list_audit(
        self,
        request: Request[Any, Any, Any],
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_AUDIT_PAGE, description="Entries per page.")
        ] = 100,
        before_seq: Annotated[
            int | None, QueryParameter(ge=1, description="Only entries before this seq.")
        ] = None,
    ) -> AuditPage:
        """The last ``limit`` entries (before ``before_seq`` when given), oldest first."""
        runtime = runtime_of(request)
        entries = read_audit_tail(runtime.audit.path, limit=limit, before_seq=before_seq)
        first = entries[0].seq if entries else None
        return AuditPage(
            entries=entries, next_before_seq=first if first is not None and first > 1 else None
        )
