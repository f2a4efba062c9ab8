"""The ``kdf_compat`` listener: KDF's own RPC protocol, served by the daemon in front of KDF.

Apps built on the Komodo DeFi SDK reach a remote KDF through ``RemoteConfig(ip, port,
rpc_password, https)``: they POST KDF's JSON to ``/`` with ``userpass``. This raw ASGI app answers
them exactly as KDF would, but every request first passes the daemon's own checks, in order:

1. client address (the TCP peer, or the client a trusted proxy forwarded for);
2. the IP allow-list (``security.allowed_ips``): 403;
3. lock-out after ``security.rate_limit.lockout_after`` wrong userpasses: 429 + ``Retry-After``;
4. the per-address rate limit (``security.rate_limit.requests_per_minute``): 429;
5. ``OPTIONS`` (any path): KDF's CORS preflight;
6. ``GET /event-stream``: relayed from KDF when its startup config enables event streaming;
7. anything else is the RPC endpoint, as in KDF: the body (at most ``security.max_body_size``)
   must be JSON (else 500 with serde's message), the method POST (else 500); then per call
   (one, or each element of a batch) the daemon checks ``userpass`` in constant time against
   the instance's ``rpc_password`` (public methods need none) and the deny-list, and answers
   refused calls with KDF's own error shapes. Only the rest reaches KDF, through the supervisor,
   which inserts the real ``userpass``.

A wrong userpass therefore never reaches KDF, so KDF can never ban the daemon's loopback
address. Every call gets one audit line naming its methods, never their parameters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import msgspec

from kdf_remote.daemon.compat.backend import KDF_HOST, BackendError, ServiceBackend
from kdf_remote.daemon.compat.guard import UserpassGuard, userpass_matches
from kdf_remote.daemon.compat.protocol import (
    DEFAULT_DENY_METHODS,
    BatchMismatchError,
    JsonBodyError,
    Refusal,
    Reply,
    RpcCall,
    RpcRequest,
    batch_reply,
    forwarded_batch,
    judge,
    legacy_error,
    merge_batch,
    parse_request,
    refusal_reply,
)
from kdf_remote.daemon.compat.sse import relay_event_stream, valid_query
from kdf_remote.daemon.proxy import MAX_RPC_RESPONSE_BYTES
from kdf_remote.daemon.rpc_lane import LANE_BODY_LIMIT
from kdf_remote.daemon.security.errors import AuditLogError
from kdf_remote.daemon.security.ipaccess import rate_key, resolve_client
from kdf_remote.daemon.security.middleware import (
    DirectRequest,
    DirectResponse,
    security_headers,
)
from kdf_remote.daemon.security.ratelimit import TokenBucketLimiter, retry_after_header

if TYPE_CHECKING:
    from kdf_remote.daemon.asgi import DaemonApp
    from kdf_remote.daemon.compat.backend import CompatBackend, InstanceView
    from kdf_remote.daemon.security.audit import AuditLog, AuditThrottle
    from kdf_remote.daemon.security.ipaccess import IPAddress, IpAllowList, NetworkSet
    from kdf_remote.daemon.settings import Settings

__all__ = ["EVENT_STREAM_PATH", "CompatApp", "CompatSettings"]

log = logging.getLogger("kdf_remote.daemon.compat")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EVENT_STREAM_PATH: Final = "/event-stream"
CORS_HEADERS: Final = (
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type"),
    (b"access-control-max-age", b"3600"),
)
"""KDF's answer to ``OPTIONS``, besides ``Access-Control-Allow-Origin`` (KDF ``rpc.rs``)."""
AUDIT_ACTION_PREFIX: Final = "kdf_compat"
MAX_AUDITED_METHODS: Final = 8
MAX_METHOD_CHARS: Final = 64
_JSON: Final = (b"content-type", b"application/json")
_PLAIN: Final = (b"content-type", b"text/plain; charset=utf-8")


class CompatSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the listener enforces, from ``kdf_compat:`` and ``security:``."""

    instance: str
    """The instance it fronts."""
    deny_methods: frozenset[str] = DEFAULT_DENY_METHODS
    max_body_size: int = 1024**2
    requests_per_minute: int = 600
    lockout_after: int = 5
    lockout: float = 900.0
    max_streams: int = 32
    max_stream_duration: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> CompatSettings:
        """The listener's settings; the deny-list is the defaults plus ``deny_methods``."""
        security = settings.security
        rate = security.rate_limit
        return cls(
            instance=settings.kdf_compat.instance,
            deny_methods=DEFAULT_DENY_METHODS | frozenset(settings.kdf_compat.deny_methods),
            max_body_size=security.max_body_size,
            requests_per_minute=rate.requests_per_minute,
            lockout_after=rate.lockout_after,
            lockout=rate.lockout,
            max_streams=security.max_streams,
            max_stream_duration=security.max_stream_duration,
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    """A response to send: status, body and the headers that vary."""

    status: int
    body: bytes
    content_type: tuple[bytes, bytes] | None = _JSON
    origin: bytes | None = None
    """``Access-Control-Allow-Origin`` as KDF sent it (None: the listener's own)."""
    extra: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(slots=True)
class _Exchange:
    """One request as the audit sees it."""

    method: str
    client: IPAddress | None
    key: str
    tls: bool
    action: str = "?"
    calls: tuple[RpcCall, ...] = ()
    refusals: list[Refusal | None] = field(default_factory=list)
    authenticated: bool = False
    status: int | None = None
    note: str | None = None


class _RefusedError(Exception):
    def __init__(
        self, status: int, message: str, *, throttle: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.throttle = throttle
        self.retry_after = retry_after


class _ClientGoneError(Exception):
    """The client disconnected while its body was read."""


class CompatApp:
    """Raw ASGI app of the ``kdf_compat`` listener (see the module docstring).

    Args:
        config: what the listener enforces.
        backend: the fronted instance (the daemon's supervisor, or a fake in tests).
        allow_list: ``security.allowed_ips`` (shared with the REST API).
        trusted_proxies: peers whose ``X-Forwarded-For`` is believed.
        audit: the daemon's audit log.
        audit_throttle: bounds the lines a flood of refused requests writes.
        clock: monotonic seconds (rate limits and lock-out).
    """

    def __init__(
        self,
        *,
        config: CompatSettings,
        backend: CompatBackend,
        allow_list: IpAllowList,
        trusted_proxies: NetworkSet,
        audit: AuditLog,
        audit_throttle: AuditThrottle,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.backend = backend
        self.allow_list = allow_list
        self.trusted_proxies = trusted_proxies
        self.audit = audit
        self.audit_throttle = audit_throttle
        rpm = config.requests_per_minute
        self.limiter = TokenBucketLimiter(rate=rpm / 60.0, burst=max(1, rpm // 4), clock=clock)
        # Its own lock-out, not the REST API's: a client locked out here keeps its API access
        # (and a proof that KDF was never asked stays visible through the REST proxy).
        self.guard = UserpassGuard(
            max_failures=config.lockout_after, lockout=config.lockout, clock=clock
        )
        self._shutdown = asyncio.Event()
        self._streams = 0

    @classmethod
    def for_daemon(cls, settings: Settings, daemon: DaemonApp) -> CompatApp:
        """The listener of a daemon: its settings, supervisor, allow-list and audit log."""
        runtime = daemon.security
        return cls(
            config=CompatSettings.from_settings(settings),
            backend=ServiceBackend(daemon.service),
            allow_list=runtime.allow_list,
            trusted_proxies=runtime.trusted_proxies,
            audit=runtime.audit,
            audit_throttle=runtime.audit_throttle,
        )

    def begin_shutdown(self) -> None:
        """End open event streams now, so a graceful shutdown does not wait for them."""
        self._shutdown.set()

    # -----------------------------------------------------------------------------------------
    # The lane face (see kdf_remote.daemon.http_protocol): small POST bodies, no ASGI

    @property
    def max_body(self) -> int:
        """Largest body the HTTP protocol hands to :meth:`respond` (larger ones go to ASGI)."""
        return min(self.config.max_body_size, LANE_BODY_LIMIT)

    def match(self, method: str, path: str) -> str | None:
        """Every POST is a KDF call, whatever its path (as in KDF)."""
        return "rpc" if method == "POST" else None

    async def respond(self, request: DirectRequest, key: str) -> DirectResponse:
        """The answer to one KDF call whose body was read with its head.

        The same checks, answers, headers and audit line as the ASGI face; the response's
        ``after`` writes the audit line.
        """
        ex = self._exchange(request.method, request.peer, request.headers, tls=request.tls)
        view: InstanceView | None = None
        try:
            self._admit(ex)
        except _RefusedError as refused:
            answer = _refusal_answer(refused)
            after = partial(self._audit_refusal, ex, refused)
        else:
            ex.action = f"{AUDIT_ACTION_PREFIX} POST /"
            answer, view = await self._rpc_answer(ex, request.body)
            after = partial(self._audit, ex)
        ex.status = answer.status
        return DirectResponse(
            status=answer.status,
            headers=self._headers(ex, answer, view),
            body=answer.body,
            routed=True,
            after=after,
        )

    # -----------------------------------------------------------------------------------------
    # The ASGI face

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            # KDF has no WebSocket endpoint: refuse before any accept.
            await send({"type": "websocket.close", "code": 1008})

    # -----------------------------------------------------------------------------------------
    # Admission

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        ex = self._exchange(
            scope["method"],
            peer[0] if peer else None,
            scope["headers"],
            tls=scope.get("scheme") == "https",
        )
        try:
            self._admit(ex)
        except _RefusedError as refused:
            await self._refuse(ex, refused, send)
            return
        if ex.method == "OPTIONS":
            view = self.backend.view(self.config.instance)
            await self._send(ex, send, _Answer(200, b"", None, extra=CORS_HEADERS), view)
            return
        try:
            if ex.method == "GET" and scope["path"] == EVENT_STREAM_PATH:
                ex.action = f"{AUDIT_ACTION_PREFIX} GET {EVENT_STREAM_PATH}"
                await self._event_stream(ex, scope, receive, send)
            else:
                ex.action = f"{AUDIT_ACTION_PREFIX} {ex.method} /"
                await self._rpc(ex, scope, receive, send)
        except _ClientGoneError:
            ex.note = "client disconnected before sending its body"
        self._audit(ex)

    def _exchange(
        self, method: str, peer: str | None, headers: list[tuple[bytes, bytes]], *, tls: bool
    ) -> _Exchange:
        forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
        client = resolve_client(peer, forwarded, self.trusted_proxies)
        return _Exchange(method=method, client=client, key=rate_key(client), tls=tls)

    def _admit(self, ex: _Exchange) -> None:
        if not self.allow_list.allows(ex.client):
            raise _RefusedError(403, "this address may not use this endpoint", throttle="compat-ip")
        locked = self.guard.retry_after(ex.key)
        if locked > 0:
            raise _RefusedError(
                429,
                "too many wrong userpasses from this address; retry later",
                throttle="compat-lockout",
                retry_after=locked,
            )
        wait = self.limiter.hit(ex.key)
        if wait > 0:
            raise _RefusedError(429, "too many requests", throttle="compat-rate", retry_after=wait)

    async def _refuse(self, ex: _Exchange, refused: _RefusedError, send: Send) -> None:
        await self._send(ex, send, _refusal_answer(refused), None)
        self._audit_refusal(ex, refused)

    def _audit_refusal(self, ex: _Exchange, refused: _RefusedError) -> None:
        skipped = self.audit_throttle.admit((ex.key, refused.throttle))
        if skipped is None:
            return
        ex.action = f"{AUDIT_ACTION_PREFIX} {ex.method}"
        ex.note = refused.message + (f" ({skipped} similar refusals not logged)" if skipped else "")
        self._audit(ex, outcome="denied")

    # -----------------------------------------------------------------------------------------
    # The RPC endpoint

    async def _rpc(self, ex: _Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.config.max_body_size
        try:
            body = await _read_body(scope, receive, limit)
        except _TooLargeError:
            too_large = legacy_error(f"request body over the {limit}-byte limit")
            await self._send(ex, send, _Answer(413, too_large), None)
            return
        answer, view = await self._rpc_answer(ex, body)
        await self._send(ex, send, answer, view)

    async def _rpc_answer(self, ex: _Exchange, body: bytes) -> tuple[_Answer, InstanceView | None]:
        """The answer to one RPC request whose whole body was read (and the instance's view)."""
        view = self.backend.view(self.config.instance)
        try:
            request = parse_request(body)
        except JsonBodyError as exc:
            # KDF reads the body as JSON before anything else; serde's message has no location.
            return _Answer(500, msgspec.json.encode({"error": exc.message})), view
        ex.calls = request.calls
        if ex.method != "POST":
            return _Answer(500, legacy_error("Only POST requests are supported!")), view
        if view is None:
            # No stored config (never started) or the daemon is starting or stopping: there is
            # no password to check against, and judging would count good clients' calls as
            # failures toward the lock-out.
            unavailable = legacy_error(
                f"instance {self.config.instance!r} is not available: it has no stored config "
                "or the daemon is not serving it right now"
            )
            return _Answer(503, unavailable), view
        refused = self._judge_all(ex, request, view)
        return await self._answer(request, refused), view

    def _judge_all(
        self, ex: _Exchange, request: RpcRequest, view: InstanceView
    ) -> list[Reply | None]:
        """Each call's refusal reply, or None for a call that goes to KDF."""
        password = view.rpc_password

        def userpass_ok(given: str) -> bool:
            if self.guard.retry_after(ex.key) > 0:
                # Locked out mid-batch: the rest of the batch gets no more guesses.
                return False
            # No stored password: nothing can match (KDF without one refuses legacy calls too).
            ok = password is not None and userpass_matches(given, password)
            ex.authenticated = ex.authenticated or ok
            return ok

        replies: list[Reply | None] = []
        for call in request.calls:
            refusal = judge(call, userpass_ok=userpass_ok, deny=self.config.deny_methods)
            ex.refusals.append(refusal)
            if refusal is None:
                replies.append(None)
                continue
            left = self.guard.record_failure(ex.key) if refusal is Refusal.USERPASS_INVALID else 0
            replies.append(refusal_reply(call, refusal, attempts_left=left))
        return replies

    async def _answer(self, request: RpcRequest, refused: list[Reply | None]) -> _Answer:
        if not request.batch:
            only = refused[0]
            return _Answer(only.status, only.body) if only else await self._forward(request.body)
        if all(reply is None for reply in refused):
            return await self._forward(request.body)
        if all(reply is not None for reply in refused):
            return _Answer(200, batch_reply([reply.body for reply in refused if reply]))
        answer = await self._forward(forwarded_batch(request, refused))
        if answer.status != 200:
            # Not a batch answer (KDF refused the whole request): pass it on as it is.
            return answer
        try:
            merged = merge_batch(refused, answer.body)
        except BatchMismatchError as exc:
            return _Answer(502, legacy_error(str(exc)))
        return _Answer(200, merged, answer.content_type, answer.origin)

    async def _forward(self, body: bytes) -> _Answer:
        try:
            raw = await self.backend.rpc(self.config.instance, body)
        except BackendError as exc:
            return _Answer(exc.status, legacy_error(exc.message))
        if len(raw.body) > MAX_RPC_RESPONSE_BYTES:
            too_big = f"KDF's answer is larger than {MAX_RPC_RESPONSE_BYTES} bytes"
            return _Answer(502, legacy_error(too_big))
        content_type = raw.header("content-type")
        origin = raw.header("access-control-allow-origin")
        return _Answer(
            raw.status,
            raw.body,
            (b"content-type", content_type.encode("latin-1")) if content_type else None,
            origin.encode("latin-1") if origin is not None else None,
        )

    # -----------------------------------------------------------------------------------------
    # The event stream

    async def _event_stream(
        self, ex: _Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        view = self.backend.view(self.config.instance)
        if view is None or not view.event_streaming or view.rpc_port is None:
            # What KDF answers when `event_streaming_configuration` is missing.
            disabled = _Answer(500, b"Event streaming is disabled", _PLAIN)
            await self._send(ex, send, disabled, view)
            return
        query = scope.get("query_string") or b""
        if not valid_query(query):
            await self._send(ex, send, _Answer(400, legacy_error("invalid query string")), view)
            return
        if self._shutdown.is_set() or self._streams >= self.config.max_streams:
            busy = legacy_error(f"too many open event streams ({self.config.max_streams})")
            await self._send(ex, send, _Answer(429, busy, extra=((b"retry-after", b"5"),)), view)
            return
        target = EVENT_STREAM_PATH.encode() + (b"?" + query if query else b"")
        self._streams += 1
        try:
            ex.status = await relay_event_stream(
                host=KDF_HOST,
                port=view.rpc_port,
                target=target,
                receive=receive,
                send=send,
                extra_headers=security_headers(ex.tls),
                max_duration=self.config.max_stream_duration,
                shutdown=self._shutdown,
            )
        except BackendError as exc:
            await self._send(ex, send, _Answer(exc.status, legacy_error(exc.message)), view)
        finally:
            self._streams -= 1

    # -----------------------------------------------------------------------------------------
    # Responses and audit

    def _origin(self, ex: _Exchange, view: InstanceView | None) -> bytes:
        """KDF's ``rpccors``, or KDF's default for the scheme the client sees."""
        if view is not None and view.rpccors is not None:
            return view.rpccors.encode("latin-1")
        return b"https://localhost:3000" if ex.tls else b"http://localhost:3000"

    async def _send(
        self, ex: _Exchange, send: Send, answer: _Answer, view: InstanceView | None
    ) -> None:
        headers = self._headers(ex, answer, view)
        headers.append((b"content-length", str(len(answer.body)).encode()))
        ex.status = answer.status
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})

    def _headers(
        self, ex: _Exchange, answer: _Answer, view: InstanceView | None
    ) -> list[tuple[bytes, bytes]]:
        """The answer's headers but ``Content-Length``."""
        origin = answer.origin if answer.origin is not None else self._origin(ex, view)
        headers = [(b"access-control-allow-origin", origin)]
        if answer.content_type is not None:
            headers.append(answer.content_type)
        headers.extend(answer.extra)
        headers.extend(security_headers(ex.tls))
        return headers

    def _audit(self, ex: _Exchange, *, outcome: str | None = None) -> None:
        status = ex.status
        if outcome is None:
            refused = any(refusal is not None for refusal in ex.refusals)
            served = status is not None and status < 400
            outcome = "denied" if refused else ("ok" if served else "failed")
        try:
            self.audit.append_soon(
                action=ex.action,
                outcome=outcome,
                # The caller is identified by the rpc_password only: no key name to record.
                actor="rpc_password" if ex.authenticated else None,
                source_ip=str(ex.client) if ex.client is not None else None,
                target=self.config.instance,
                status=status,
                detail=ex.note if ex.note is not None else audit_detail(ex.calls, ex.refusals),
            )
        except AuditLogError:
            log.exception("audit line lost for kdf_compat %s", ex.method)


def _refusal_answer(refused: _RefusedError) -> _Answer:
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if refused.retry_after is not None:
        extra = ((b"retry-after", retry_after_header(refused.retry_after).encode()),)
    return _Answer(refused.status, legacy_error(refused.message), extra=extra)


def audit_detail(calls: tuple[RpcCall, ...], refusals: list[Refusal | None]) -> str:
    """``methods: a, b; refused: c (wrong userpass)``: method names only, never a parameter."""
    if not calls:
        return "methods: none"
    names = [(call.method or "?")[:MAX_METHOD_CHARS] for call in calls]
    unique = list(dict.fromkeys(names))
    shown = ", ".join(unique[:MAX_AUDITED_METHODS])
    extra = len(unique) - MAX_AUDITED_METHODS
    text = f"methods: {shown}" + (f" (+{extra} more)" if extra > 0 else "")
    refused = list(
        dict.fromkeys(
            f"{name} ({refusal.value})"
            for name, refusal in zip(names, refusals, strict=False)
            if refusal is not None
        )
    )
    if refused:
        text += "; refused: " + ", ".join(refused[:MAX_AUDITED_METHODS])
    return text


class _TooLargeError(Exception):
    """The body is over the limit."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body; :class:`_TooLargeError` past ``limit`` (declared or actual)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 18 or int(text) > limit:
                raise _TooLargeError
            break
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise _TooLargeError
        if not message.get("more_body", False):
            return bytes(chunks)
