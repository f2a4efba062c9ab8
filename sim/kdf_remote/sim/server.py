"""kdf-sim's HTTP/1.1 server: asyncio protocol + httptools parser, keep-alive, pipelining.

Like KDF (hyper), every path except ``/event-stream`` is the RPC endpoint; the request body is
parsed as JSON before the HTTP method is checked; ``OPTIONS`` answers the CORS preflight.
Handlers are synchronous, so pipelined requests are answered in order as they are parsed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import httptools
import msgspec

from kdf_remote.sim.methods import LEGACY_METHODS, V2_METHODS
from kdf_remote.sim.node import Node
from kdf_remote.sim.protocol import Reply, handle_body

__all__ = ["SSE_PATH", "RpcServerProtocol", "ServerContext", "build_response"]

SSE_PATH = b"/event-stream"
_REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    500: b"Internal Server Error",
}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_encode = msgspec.json.encode


class _DateCache:
    """The ``date`` header hyper sends, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            t = time.gmtime(now)
            self._value = (
                f"date: {_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT\r\n"
            ).encode()
            self._second = now
        return self._value


_DATE = _DateCache()


def build_response(
    status: int,
    body: bytes,
    *,
    origin: bytes,
    version: bytes = b"1.1",
    keep_alive: bool = True,
    extra_headers: bytes = b"",
) -> bytes:
    """Serialise one response with ``content-length`` and ``access-control-allow-origin``."""
    reason = _REASONS.get(status, b"Unknown")
    connection = b"" if keep_alive else b"connection: close\r\n"
    return b"".join(
        (
            b"HTTP/",
            version,
            b" ",
            str(status).encode(),
            b" ",
            reason,
            b"\r\n",
            b"access-control-allow-origin: ",
            origin,
            b"\r\n",
            extra_headers,
            connection,
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\n",
            _DATE.get(),
            b"\r\n",
            body,
        )
    )


class ServerContext:
    """What every connection shares: the node, the CORS origin bytes and the request log."""

    __slots__ = (
        "_streams_event",
        "connections",
        "cors_headers",
        "node",
        "on_request",
        "origin",
        "sse_origin",
    )

    def __init__(
        self, node: Node, on_request: Callable[[object, tuple[str, int]], None] | None
    ) -> None:
        self.node = node
        self.on_request = on_request
        self.origin = node.config.rpccors.encode()
        self.cors_headers = (
            b"access-control-allow-methods: POST, OPTIONS\r\n"
            b"access-control-allow-headers: Content-Type\r\n"
            b"access-control-max-age: 3600\r\n"
        )
        origin = node.config.event_stream_origin
        self.sse_origin = origin.encode() if origin is not None else None
        self.connections: set[RpcServerProtocol] = set()
        self._streams_event = asyncio.Event()
        node.streams_changed = self.notify_streams_changed

    def notify_streams_changed(self) -> None:
        """Wake every SSE connection (a streamer was enabled or disabled)."""
        self._streams_event.set()

    async def wait_streams_changed(self, seconds: float | None = None) -> None:
        """Sleep until :meth:`notify_streams_changed`, or at most ``seconds``."""
        if self._streams_event.is_set():
            self._streams_event = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                await self._streams_event.wait()
        except TimeoutError:
            return


class RpcServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, context: ServerContext) -> None:
        self._ctx = context
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._peer: tuple[str, int] = ("", 0)
        self._url = b""
        self._body: list[bytes] = []
        self._expect_continue = False
        self._closing = False
        self._sse_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self._transport = cast("asyncio.Transport", transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
        self._ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ctx.connections.discard(self)
        self._transport = None
        if self._sse_task is not None:
            self._sse_task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._sse_task is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400)
        except httptools.HttpParserError:
            self._fail(400)

    def pause_writing(self) -> None:
        # Stop reading while the client does not read its answers: bounded memory per connection.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        if self._expect_continue and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing or self._transport is None:
            return
        parser = self._parser
        method = parser.get_method().decode("latin-1")
        version = parser.get_http_version().encode()
        keep_alive = parser.should_keep_alive()
        ctx = self._ctx
        path = self._url.split(b"?", 1)[0]
        if method == "GET" and path == SSE_PATH:
            self._start_sse(version)
            return
        if method == "OPTIONS":
            payload = build_response(
                200,
                b"",
                origin=ctx.origin,
                version=version,
                keep_alive=keep_alive,
                extra_headers=ctx.cors_headers,
            )
        else:
            body = b"".join(self._body)
            reply = handle_body(
                ctx.node,
                LEGACY_METHODS,
                V2_METHODS,
                method,
                body,
                peer=self._peer,
                on_request=ctx.on_request,
            )
            payload = self._encode_reply(reply, version, keep_alive)
        self._transport.write(payload)
        if not keep_alive:
            self._closing = True
            self._transport.close()

    # -- helpers ----------------------------------------------------------------------------
    def _encode_reply(self, reply: Reply, version: bytes, keep_alive: bool) -> bytes:
        return build_response(
            reply.status,
            _encode(reply.payload),
            origin=self._ctx.origin,
            version=version,
            keep_alive=keep_alive,
            extra_headers=b"content-type: application/json\r\n" if reply.json_content_type else b"",
        )

    def _fail(self, status: int) -> None:
        if self._transport is None:
            return
        body = _encode({"error": "Invalid HTTP request"})
        self._transport.write(
            build_response(status, body, origin=self._ctx.origin, keep_alive=False)
        )
        self._closing = True
        self._transport.close()

    def _start_sse(self, version: bytes) -> None:
        transport = self._transport
        assert transport is not None
        origin = self._ctx.sse_origin
        if origin is None:
            self._write_plain_error(b"Event streaming is disabled", version)
            return
        client_id = _client_id(self._url)
        if isinstance(client_id, str):
            self._write_plain_error(f"Invalid client ID: {client_id}".encode(), version)
            return
        transport.write(
            b"HTTP/" + version + b" 200 OK\r\n"
            b"content-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\n"
            b"access-control-allow-origin: " + origin + b"\r\n"
            b"transfer-encoding: chunked\r\n" + _DATE.get() + b"\r\n"
        )
        self._sse_task = asyncio.get_running_loop().create_task(self._sse_loop(client_id))

    def _write_plain_error(self, message: bytes, version: bytes) -> None:
        assert self._transport is not None
        self._transport.write(
            build_response(500, message, origin=self._ctx.origin, version=version)
        )

    async def _sse_loop(self, client_id: int) -> None:
        node = self._ctx.node
        while self._transport is not None:
            interval = node.heartbeats.get(client_id)
            if interval is None:
                await self._ctx.wait_streams_changed()
                continue
            frame = _encode({"_type": "HEARTBEAT", "message": {"timestamp": int(time.time())}})
            data = b"data: " + frame + b"\n\n"
            self._transport.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await self._ctx.wait_streams_changed(interval)


def _client_id(url: bytes) -> int | str:
    """``?id=<u64>`` of an SSE request (0 when absent), or the parse error text."""
    if b"?" not in url:
        return 0
    query = url.split(b"?", 1)[1].decode("latin-1")
    for param in query.split("&"):
        if param.startswith("id="):
            raw = param[3:]
            if raw.isdigit() and int(raw) < 2**64:
                return int(raw)
            return "invalid digit found in string"
    return 0
