"""A lean pooled keep-alive HTTP/1.1 client for KDF's RPC on loopback.

KDF speaks one thing, ``POST /`` with a JSON body, so this client does exactly that: an asyncio
protocol for I/O, ``httptools`` (llhttp) for parsing responses, and a bounded pool of keep-alive
connections with one request in flight per connection. It sits on the daemon's RPC proxy hot path,
where httpx's AsyncClient collapses under concurrency, hence no general-purpose client here.

Failure model: every way of KDF not answering (connection refused, timeout, reset, a malformed or
truncated response) raises :class:`~kdf_remote.kdf.errors.KdfUnreachable`, and the connection
involved is discarded. A request is never retried: KDF calls are not idempotent (``stop``,
``withdraw``, ``send_raw_transaction``), so a second attempt could act twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import httptools
import msgspec

from kdf_remote.kdf.errors import KdfUnreachable

__all__ = ["DEFAULT_MAX_CONNECTIONS", "KdfTransport", "RawResponse"]

DEFAULT_MAX_CONNECTIONS = 32
"""Upper bound of open connections per transport; further callers wait for a free one."""
_SINGLE_WRITE_LIMIT = 65536
"""Bodies below this are sent with the head in one write; larger ones are not copied."""


class RawResponse(msgspec.Struct, frozen=True, gc=False):
    """One HTTP response from KDF: status, headers (names lower-cased) and the raw body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection and its response parser; never used by two requests at once.

    A protocol rather than streams: the response is parsed in ``data_received`` and the waiting
    request is woken once, when the message is complete, with no reader buffer in between.
    """

    __slots__ = (
        "_body",
        "_gone",
        "_headers",
        "_headers_done",
        "_keep_alive",
        "_lost",
        "_parser",
        "_transport",
        "_waiter",
    )

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._keep_alive = False
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self._discard()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            waiter.set_exception(exc)
            self._discard()

    def eof_received(self) -> bool:
        waiter = self._waiter
        self._lost = True
        if waiter is not None and not waiter.done():
            if self._body_ends_at_eof():
                self._keep_alive = False
                waiter.set_result(None)
            else:
                waiter.set_exception(
                    ConnectionResetError("KDF closed the connection before a full response")
                )
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if not self._gone.done():
            self._gone.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                exc or ConnectionResetError("KDF closed the connection before a full response")
            )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # llhttp resets its flags after this callback, so the answer must be read here.
        self._keep_alive = self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def reusable(self) -> bool:
        """False once the peer closed or reset the idle connection."""
        transport = self._transport
        return not (self._lost or transport is None or transport.is_closing())

    def _discard(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()

    def _body_ends_at_eof(self) -> bool:
        names = {name for name, _ in self._headers}
        return self._headers_done and not {"content-length", "transfer-encoding"} & names

    async def request(self, head: bytes, body: bytes) -> tuple[RawResponse, bool]:
        """Send one request; return the response and whether the connection may be reused."""
        transport = self._transport
        if transport is None or self._lost:
            raise ConnectionResetError("KDF closed the connection")
        self._headers = []
        self._body = []
        self._headers_done = False
        self._keep_alive = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        # One write for a small call (one segment); a large body is not copied.
        if len(body) < _SINGLE_WRITE_LIMIT:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        try:
            await waiter
        finally:
            self._waiter = None
        response = RawResponse(
            status=self._parser.get_status_code(),
            headers=tuple(self._headers),
            body=self._body[0] if len(self._body) == 1 else b"".join(self._body),
        )
        return response, self._keep_alive

    def close(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await self._gone


class KdfTransport:
    """Pooled keep-alive HTTP/1.1 to ``http://host:port/`` (KDF on loopback).

    Safe to share between any number of concurrent tasks: at most ``max_connections``
    connections exist, each carries one request at a time, and extra callers queue for a free
    connection (that wait counts against their ``timeout``).
    """

    def __init__(
        self, host: str, port: int, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections: got {max_connections}, expected >= 1")
        self.host = host
        self.port = port
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._head_prefix = (
            f"POST / HTTP/1.1\r\nHost: {host_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode("ascii")

    def __repr__(self) -> str:
        return f"KdfTransport({self.host!r}, {self.port})"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        _, connection = await asyncio.get_running_loop().create_connection(
            _Connection, self.host, self.port
        )
        return connection

    async def post(self, body: bytes, *, timeout: float) -> RawResponse:  # noqa: ASYNC109 (interface)
        """POST ``body`` to ``/`` and return KDF's response, whatever its HTTP status.

        Raises :class:`KdfUnreachable` when no complete response arrives within ``timeout``
        seconds (connect, queueing for a connection, sending and reading all included).
        """
        if self._closed:
            raise KdfUnreachable(f"transport to {self.host}:{self.port} is closed")
        head = self._head_prefix + str(len(body)).encode("ascii") + b"\r\n\r\n"
        try:
            async with asyncio.timeout(timeout), self._slots:
                connection = self._take_idle() or await self._connect()
                try:
                    response, keep_alive = await connection.request(head, body)
                except BaseException:
                    connection.close()
                    raise
                if keep_alive and not self._closed:
                    self._idle.append(connection)
                else:
                    connection.close()
                return response
        except TimeoutError:
            raise KdfUnreachable(
                f"KDF at {self.host}:{self.port} did not answer within {timeout:g} s"
            ) from None
        except (OSError, httptools.HttpParserError) as exc:
            raise KdfUnreachable(
                f"KDF at {self.host}:{self.port} did not answer: {type(exc).__name__}: {exc}"
            ) from None

    async def close(self) -> None:
        """Close idle connections and refuse new requests; in-flight ones finish, then close."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.wait_closed()
