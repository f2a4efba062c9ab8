"""The security gate: one raw ASGI middleware in front of the Litestar router.

Per HTTP request, in this order (each step refuses with the daemon's ``{"error", "detail"}``):

1. client address: the TCP peer, or the forwarded client when the peer is a trusted proxy;
   the ``Host`` header against ``security.allowed_hosts``, matched literally (400
   ``host_not_allowed``; ``X-Forwarded-Host`` is never read);
2. allow-list (403 ``ip_not_allowed``);
3. lock-out after failed authentications (429 + ``Retry-After``);
4. rate limit per client address, stricter on ``POST /v1/auth/token`` (429 + ``Retry-After``);
5. declared body size (413 before anything is read);
6. public routes (``GET /v1/health``) go straight through;
7. credential: ``Authorization: Bearer`` or ``X-API-Key``, an API key or an access token
   (the token endpoint takes API keys only); failures count toward the lock-out (401);
8. rate limit per credential (429);
9. signature, when headers are sent or the key requires it (401 ``bad_signature``);
10. the principal goes to ``scope["user"]`` and an :class:`AuthContext` to ``scope["auth"]``.

After the response, mutating calls and refused attempts get one audit line. Every response gets
``X-Content-Type-Options: nosniff``, ``Cache-Control: no-store`` (unless the handler set one) and,
over TLS, ``Strict-Transport-Security``.

Unauthenticated work is bounded: no body is read and nothing is parsed before step 7 passes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec

from kdf_remote.daemon.errors import encode_error
from kdf_remote.daemon.principal import Principal
from kdf_remote.daemon.security.errors import AuditLogError, CredentialError, SignatureError
from kdf_remote.daemon.security.ipaccess import rate_key, resolve_client
from kdf_remote.daemon.security.ratelimit import retry_after_header
from kdf_remote.daemon.security.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureHeaders,
)
from kdf_remote.daemon.security.tls import HSTS_VALUE

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping

    from litestar.connection import ASGIConnection

    from kdf_remote.daemon.security.ipaccess import IPAddress
    from kdf_remote.daemon.security.runtime import Authenticated, SecurityRuntime

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[..., Awaitable[None]]

__all__ = [
    "AUDIT_NOTE_KEY",
    "RUNTIME_KEY",
    "AuditNote",
    "AuthContext",
    "DirectAnswer",
    "DirectHandler",
    "DirectRequest",
    "DirectResponse",
    "SecurityMiddleware",
    "auth_context_of",
    "note_audit",
    "security_headers",
    "set_audit_note",
]

log = logging.getLogger("kdf_remote.daemon.security")

RUNTIME_KEY: Final = "kdf_security"
"""Scope key holding the :class:`SecurityRuntime` (set on every request the gate passed)."""
AUDIT_NOTE_KEY: Final = "kdf_audit_note"
MUTATING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIED_STATUSES: Final = frozenset({401, 403, 413, 429})
_CAPTURE_LIMIT: Final = 4096
_WWW_AUTHENTICATE: Final = (b"www-authenticate", b'Bearer realm="kdf-remote"')
_JSON: Final = (b"content-type", b"application/json")
_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
_NO_STORE: Final = (b"cache-control", b"no-store")
_HSTS: Final = (b"strict-transport-security", HSTS_VALUE.encode())
_INTERNAL_ERROR_BODY: Final = encode_error(
    "internal_error", "the daemon failed to handle this request"
)


class AuthContext(msgspec.Struct, frozen=True, kw_only=True):
    """How the request was authenticated (``scope["auth"]``; ``request.auth`` in Litestar)."""

    via: str
    """``api_key`` or ``jwt``."""
    key_id: str
    jti: str | None
    """The access token's id, when the credential was a token."""
    token_expires_at: int | None
    signed: bool
    """A valid signature covered this request."""
    signing_required_for_admin: bool
    client_ip: str | None


@dataclass(slots=True)
class AuditNote:
    """What a handler adds to its audit line (see :func:`note_audit`)."""

    target: str | None = None
    detail: str | None = None


def note_audit(
    connection: ASGIConnection[Any, Any, Any, Any],
    *,
    target: str | None = None,
    detail: str | None = None,
) -> None:
    """Set the target and detail of this request's audit line (never pass a secret)."""
    set_audit_note(cast("dict[str, Any]", connection.scope), target=target, detail=detail)


def set_audit_note(
    scope: MutableMapping[str, Any], *, target: str | None = None, detail: str | None = None
) -> None:
    """:func:`note_audit` for raw ASGI code (e.g. the RPC fast path), given the scope."""
    scope[AUDIT_NOTE_KEY] = AuditNote(target=target, detail=detail)


def auth_context_of(scope: Mapping[str, Any]) -> AuthContext | None:
    """The gate's :class:`AuthContext` for this request, if it authenticated one."""
    value = scope.get("auth")
    return value if isinstance(value, AuthContext) else None


class _RefusedError(Exception):
    """Stop the request with this status, error code and detail."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        retry_after: float | None = None,
        throttle: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.throttle = throttle
        """Audit at most once a minute per (source, this key); None: audit every time."""


@dataclass(frozen=True, slots=True)
class DirectRequest:
    """A request answered outside ASGI, its body read together with its head."""

    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    peer: str | None
    """The TCP peer's address (the gate resolves forwarded addresses itself)."""
    headers: list[tuple[bytes, bytes]]
    """As received, names lower-cased."""
    body: bytes
    tls: bool


@dataclass(frozen=True, slots=True)
class DirectAnswer:
    """What a direct handler answers: status, JSON body, and the detail of its audit line."""

    status: int
    body: bytes
    audit_detail: str | None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Extra response headers (names lower-cased)."""


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """The full response to send: security headers included, ``content-length`` excluded."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    routed: bool
    """False when the gate refused the request (it never reached the handler)."""
    after: Callable[[], None]
    """Writes the audit line: call it once the response is sent (off the caller's latency)."""


DirectHandler = Callable[[Principal], Awaitable[DirectAnswer]]
"""Serves an admitted direct request for its principal; reports errors in its answer."""


class _ClientGoneError(Exception):
    """The client disconnected while its body was read."""


@dataclass(slots=True)
class _Headers:
    host: bytes | None = None
    authorization: bytes | None = None
    api_key: bytes | None = None
    forwarded_for: list[bytes] = field(default_factory=list)
    content_length: bytes | None = None
    chunked: bool = False
    timestamp: bytes | None = None
    nonce: bytes | None = None
    signature: bytes | None = None

    @classmethod
    def parse(cls, raw: list[tuple[bytes, bytes]]) -> _Headers:
        found = cls()
        for name, value in raw:
            if name == b"host":
                found.host = value
            elif name == b"authorization":
                found.authorization = value
            elif name == b"x-api-key":
                found.api_key = value
            elif name == b"x-forwarded-for":
                found.forwarded_for.append(value)
            elif name == b"content-length":
                found.content_length = value
            elif name == b"transfer-encoding":
                found.chunked = True
            elif name == TIMESTAMP_HEADER:
                found.timestamp = value
            elif name == NONCE_HEADER:
                found.nonce = value
            elif name == SIGNATURE_HEADER:
                found.signature = value
        return found

    def credential(self) -> str | None:
        """The credential sent, or None.

        Raises:
            _RefusedError: two credentials, a non-Bearer scheme, or non-ASCII bytes.
        """
        bearer: bytes | None = None
        if self.authorization is not None:
            scheme, _, rest = self.authorization.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                raise _RefusedError(
                    401, "unauthorized", "unsupported Authorization scheme: use Bearer"
                )
            bearer = rest.strip() or None
        api_key = self.api_key.strip() or None if self.api_key is not None else None
        if bearer is not None and api_key is not None:
            raise _RefusedError(
                401, "unauthorized", "send one credential, not both Authorization and X-API-Key"
            )
        chosen = bearer if bearer is not None else api_key
        if chosen is None:
            return None
        try:
            return chosen.decode("ascii")
        except UnicodeDecodeError:
            raise _RefusedError(401, "unauthorized", "invalid credential") from None

    def signature_headers(self) -> SignatureHeaders | None:
        if self.timestamp is None and self.nonce is None and self.signature is None:
            return None
        if self.timestamp is None or self.nonce is None or self.signature is None:
            raise _RefusedError(
                401,
                "bad_signature",
                "signed requests need X-KDF-Timestamp, X-KDF-Nonce and X-KDF-Signature",
            )
        return SignatureHeaders(
            timestamp=self.timestamp.decode("latin-1"),
            nonce=self.nonce.decode("latin-1"),
            signature=self.signature.decode("latin-1"),
        )


@dataclass(slots=True)
class _Exchange:
    """One request's state as it passes the gate."""

    scope: Scope
    method: str
    path: str
    client: IPAddress | None
    client_ip: str | None
    """``str(client)``, formatted once (ipaddress formats on every ``str``)."""
    rate_key: str
    auth: Authenticated | None = None
    status: int | None = None
    error_body: bytearray | None = None


def _target(scope: Scope) -> str:
    """The request target as sent: raw path, then ``?query`` when there is one."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else scope.get("path", "/")
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


class SecurityMiddleware:
    """Raw ASGI middleware applying :class:`SecurityRuntime` to every HTTP request.

    Args:
        app: the wrapped application (in the daemon: Litestar's ``asgi_handler``).
        runtime: the security state.
    """

    def __init__(self, app: ASGIApp, runtime: SecurityRuntime) -> None:
        self.app = app
        self.runtime = runtime

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing back the coroutine to await: one frame less to resume on
        # every await of every request.
        kind = scope["type"]
        if kind == "http":
            return self._http(scope, receive, send)
        if kind == "websocket":
            # The API has no WebSocket route; refuse before any accept.
            return send({"type": "websocket.close", "code": 1008})
        return self.app(scope, receive, send)

    # ---------------------------------------------------------------------------------------
    # The gate

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.runtime
        headers = _Headers.parse(scope["headers"])
        peer = scope.get("client")
        exchange = self._exchange(
            scope, scope["method"], scope["path"], peer[0] if peer else None, headers
        )
        secure_send = self._wrap_send(exchange, send)
        try:
            body = await self._admit(exchange, headers, receive)
        except _RefusedError as refused:
            await self._refuse(exchange, refused, secure_send)
            return
        except _ClientGoneError:
            return
        scope[RUNTIME_KEY] = rt
        app_receive = _replay(body, receive) if body is not None else receive
        try:
            await self.app(scope, app_receive, secure_send)
        except Exception:
            log.exception("unhandled error on %s %r", exchange.method, exchange.path)
            if exchange.status is not None:
                raise
            await self._respond(
                500,
                _INTERNAL_ERROR_BODY,
                secure_send,
            )
        self._audit_after(exchange)

    def _exchange(
        self, scope: Scope, method: str, path: str, peer: str | None, headers: _Headers
    ) -> _Exchange:
        """Step 1: who is calling (the peer, or the client a trusted proxy forwarded for)."""
        client = resolve_client(peer, headers.forwarded_for, self.runtime.trusted_proxies)
        return _Exchange(
            scope=scope,
            method=method,
            path=path,
            client=client,
            client_ip=str(client) if client is not None else None,
            rate_key=rate_key(client),
        )

    async def _admit(self, ex: _Exchange, headers: _Headers, receive: Receive) -> bytes | None:
        """Run steps 2-10; returns the body when it had to be read, else None."""
        credential = self._admit_credential(ex, headers)
        if credential is None:
            return None
        body: bytes | None = None
        check = self._signature_check(ex, headers, credential)
        if check is not None:
            body = await _read_body(receive, self.runtime.policy.max_body_size)
            self._verify_signature(ex, check, body)
        elif headers.chunked:
            body = await _read_body(receive, self.runtime.policy.max_body_size)
        auth = ex.auth
        assert auth is not None
        claims = auth.claims
        ex.scope["user"] = auth.principal
        ex.scope["auth"] = AuthContext(
            via=auth.principal.via,
            key_id=auth.record.key_id,
            jti=claims.jti if claims is not None else None,
            token_expires_at=claims.expires_at if claims is not None else None,
            signed=check is not None,
            signing_required_for_admin=self.runtime.policy.signing_required_for_admin,
            client_ip=ex.client_ip,
        )
        return body

    def _admit_credential(self, ex: _Exchange, headers: _Headers) -> str | None:
        """Steps 2-8 (no I/O): the credential accepted, or None for a public route.

        Sets ``ex.auth``. Raises :class:`_RefusedError`.
        """
        rt = self.runtime
        policy = rt.policy
        if not rt.host_list.allows(headers.host):
            raise _RefusedError(
                400,
                "host_not_allowed",
                "this daemon does not answer to that host name",
                throttle="host",
            )
        if not rt.allow_list.allows(ex.client):
            raise _RefusedError(
                403, "ip_not_allowed", "this address may not use the daemon", throttle="ip"
            )
        locked = rt.lockout.retry_after(ex.rate_key)
        if locked > 0:
            raise _RefusedError(
                429,
                "locked_out",
                "too many failed authentication attempts from this address",
                retry_after=locked,
                throttle="lockout",
            )
        is_token_path = ex.path == policy.token_path
        limiter = rt.auth_limiter if is_token_path else rt.ip_limiter
        wait = limiter.hit(ex.rate_key)
        if wait > 0:
            raise _RefusedError(
                429, "rate_limited", "too many requests", retry_after=wait, throttle="ip-rate"
            )
        declared = _declared_length(headers.content_length)
        if declared > policy.max_body_size:
            raise _RefusedError(
                413,
                "payload_too_large",
                f"request body over the {policy.max_body_size}-byte limit",
                throttle="size",
            )
        if (ex.method, ex.path) in policy.public_routes:
            return None
        credential = headers.credential()
        if credential is None:
            raise _RefusedError(
                401,
                "unauthorized",
                "missing credentials: send 'Authorization: Bearer <key or token>' or 'X-API-Key'",
                throttle="anonymous",
            )
        try:
            auth = rt.authenticate(credential, allow_token=not is_token_path)
        except CredentialError as rejected:
            if rejected.guess:
                rt.lockout.record_failure(ex.rate_key)
            raise _RefusedError(401, "unauthorized", rejected.reason) from None
        ex.auth = auth
        wait = rt.key_limiter.hit(auth.record.key_id)
        if wait > 0:
            raise _RefusedError(
                429,
                "rate_limited",
                "too many requests for this key",
                retry_after=wait,
                throttle="key-rate",
            )
        return credential

    def _signature_check(
        self, ex: _Exchange, headers: _Headers, credential: str
    ) -> tuple[SignatureHeaders, bytes] | None:
        """Step 9's plan: the headers and key to check the body against, or None (unsigned).

        Raises :class:`_RefusedError` when the key must sign and the request does not.
        """
        auth = ex.auth
        assert auth is not None
        sig = headers.signature_headers()
        if sig is None:
            if auth.record.require_signing:
                raise _RefusedError(
                    401, "signature_required", f"key {auth.record.name!r} must sign every request"
                )
            return None
        key = self.runtime.signing_key(auth, credential)
        if key is None:
            # A token from a key whose signing key is not stored (a YAML key): the signature
            # cannot be checked, so the request simply counts as unsigned.
            return None
        return sig, key

    def _verify_signature(
        self, ex: _Exchange, check: tuple[SignatureHeaders, bytes], body: bytes
    ) -> None:
        rt = self.runtime
        auth = ex.auth
        assert auth is not None
        sig, key = check
        try:
            rt.signatures.verify(
                signing_key=key,
                namespace=auth.record.key_id,
                method=ex.method,
                target=_target(ex.scope),
                headers=sig,
                body=body,
            )
        except SignatureError as rejected:
            if rejected.guess:
                rt.lockout.record_failure(ex.rate_key)
            raise _RefusedError(401, "bad_signature", rejected.reason) from None

    # ---------------------------------------------------------------------------------------
    # Responses

    def _wrap_send(self, ex: _Exchange, send: Send) -> Send:
        tls = ex.scope.get("scheme") == "https"

        async def secure_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.status = int(message["status"])
                headers = list(message.get("headers") or ())
                has_cache_control = any(name.lower() == b"cache-control" for name, _ in headers)
                headers += security_headers(tls, cache_control=not has_cache_control)
                message["headers"] = headers
                if ex.status in (401, 403):
                    ex.error_body = bytearray()
            elif message["type"] == "http.response.body" and ex.error_body is not None:
                room = _CAPTURE_LIMIT - len(ex.error_body)
                if room > 0:
                    ex.error_body += message.get("body", b"")[:room]
            await send(message)

        return secure_send

    @staticmethod
    async def _respond(status: int, body: bytes, send: Send, *extra: tuple[bytes, bytes]) -> None:
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _refuse(self, ex: _Exchange, refused: _RefusedError, send: Send) -> None:
        await self._respond(
            refused.status,
            encode_error(refused.code, refused.detail),
            send,
            *_refusal_headers(refused),
        )
        self._audit_refusal(ex, refused)

    def _audit_refusal(self, ex: _Exchange, refused: _RefusedError) -> None:
        skipped: int | None = 0
        if refused.throttle is not None:
            skipped = self.runtime.audit_throttle.admit((ex.rate_key, refused.throttle))
            if skipped is None:
                return
        detail = f"{refused.code}: {refused.detail}"
        if skipped:
            detail += f" ({skipped} similar refusals not logged)"
        self._write_audit(
            ex,
            outcome="denied",
            status=refused.status,
            action=f"{ex.method} {ex.path}",
            detail=detail,
        )

    # ---------------------------------------------------------------------------------------
    # Requests served outside ASGI (the RPC lane)

    async def serve_direct(
        self, request: DirectRequest, handler: DirectHandler, *, action: str, target: str
    ) -> DirectResponse:
        """Run the gate on ``request`` (head and body already read), then ``handler``.

        The same steps, refusals, response headers and audit lines as the ASGI face; used by
        the daemon's HTTP protocol for the RPC route, whose calls never enter ASGI. ``action``
        and ``target`` name the audit line of an admitted call, which the response's ``after``
        writes (as the ASGI face writes its lines once the response is sent).
        """
        headers = _Headers.parse(request.headers)
        ex = self._exchange(
            {"raw_path": request.raw_path, "query_string": request.query_string},
            request.method,
            request.path,
            request.peer,
            headers,
        )
        try:
            self._admit_direct(ex, headers, request.body)
        except _RefusedError as refused:
            return DirectResponse(
                status=refused.status,
                headers=_direct_headers(request.tls, _refusal_headers(refused)),
                body=encode_error(refused.code, refused.detail),
                routed=False,
                after=partial(self._audit_refusal, ex, refused),
            )
        auth = ex.auth
        assert auth is not None
        try:
            answer = await handler(auth.principal)
        except Exception:
            log.exception("unhandled error on %s %r", ex.method, ex.path)
            answer = DirectAnswer(
                status=500,
                body=_INTERNAL_ERROR_BODY,
                audit_detail=None,
            )
        return DirectResponse(
            status=answer.status,
            headers=_direct_headers(request.tls, answer.headers),
            body=answer.body,
            routed=True,
            after=partial(
                self._write_audit,
                ex,
                outcome=_outcome(answer.status),
                status=answer.status,
                action=action,
                detail=answer.audit_detail,
                target=target,
            ),
        )

    def _admit_direct(self, ex: _Exchange, headers: _Headers, body: bytes) -> None:
        credential = self._admit_credential(ex, headers)
        if credential is None:
            # Only private routes are served directly; fail closed all the same.
            raise _RefusedError(401, "unauthorized", "missing credentials")
        check = self._signature_check(ex, headers, credential)
        if check is not None:
            self._verify_signature(ex, check, body)

    # ---------------------------------------------------------------------------------------
    # Audit

    def _audit_after(self, ex: _Exchange) -> None:
        status = ex.status
        if status is None:
            return
        denied = status in DENIED_STATUSES
        if not denied and ex.method not in MUTATING:
            return
        scope = ex.scope
        handler = scope.get("route_handler")
        opt = getattr(handler, "opt", None) or {}
        if not denied and status < 400 and opt.get("audit") is False:
            return
        template = scope.get("path_template") or ex.path
        note = scope.get(AUDIT_NOTE_KEY)
        target = note.target if isinstance(note, AuditNote) else None
        if target is None:
            params = scope.get("path_params") or {}
            name = params.get("name")
            target = str(name) if name is not None else None
        detail = note.detail if isinstance(note, AuditNote) else None
        if denied and ex.error_body:
            detail = _error_text(bytes(ex.error_body)) or detail
        outcome = _outcome(status)
        self._write_audit(
            ex,
            outcome=outcome,
            status=status,
            action=f"{ex.method} {template}",
            detail=detail,
            target=target,
        )

    def _write_audit(
        self,
        ex: _Exchange,
        *,
        outcome: str,
        status: int,
        action: str,
        detail: str | None,
        target: str | None = None,
    ) -> None:
        principal: Principal | None = ex.auth.principal if ex.auth is not None else None
        try:
            self.runtime.audit.append_soon(
                action=action,
                outcome=outcome,
                actor=principal.name if principal is not None else None,
                role=principal.role.label if principal is not None else None,
                key_id=principal.key_id if principal is not None else None,
                source_ip=ex.client_ip,
                target=target,
                status=status,
                detail=detail,
            )
        except AuditLogError:
            log.exception("audit line lost for %s %r", ex.method, ex.path)


def _refusal_headers(refused: _RefusedError) -> list[tuple[bytes, bytes]]:
    extra: list[tuple[bytes, bytes]] = []
    if refused.status == 401:
        extra.append(_WWW_AUTHENTICATE)
    if refused.retry_after is not None:
        extra.append((b"retry-after", retry_after_header(refused.retry_after).encode()))
    return extra


def _direct_headers(tls: bool, extra: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [_JSON, *extra, *security_headers(tls, cache_control=True)]


def security_headers(tls: bool, *, cache_control: bool = True) -> list[tuple[bytes, bytes]]:
    """What every response gets: nosniff, no-store (unless it set its own), HSTS over TLS.

    The gate adds them to the REST API's answers; the ``kdf_compat`` listener to its own.
    """
    headers = [_NOSNIFF]
    if cache_control:
        headers.append(_NO_STORE)
    if tls:
        headers.append(_HSTS)
    return headers


def _outcome(status: int) -> str:
    """The audit outcome of an answered request."""
    if status in DENIED_STATUSES:
        return "denied"
    return "ok" if status < 400 else "failed"


class _ErrorText(msgspec.Struct):
    error: str = ""
    detail: str = ""


def _error_text(body: bytes) -> str | None:
    try:
        parsed = msgspec.json.decode(body, type=_ErrorText)
    except msgspec.DecodeError:
        return None
    text = f"{parsed.error}: {parsed.detail}".strip(": ")
    return text or None


def _declared_length(value: bytes | None) -> int:
    if value is None:
        return 0
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        raise _RefusedError(400, "bad_request", "invalid Content-Length")
    return int(text)


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, refusing (413) once it passes ``limit`` bytes."""
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise _RefusedError(
                413,
                "payload_too_large",
                f"request body over the {limit}-byte limit",
                throttle="size",
            )
        if not message.get("more_body", False):
            return bytes(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields ``body`` once, then defers to the server (disconnect)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
