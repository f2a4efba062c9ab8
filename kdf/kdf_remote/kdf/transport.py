"""A lean pooled keep-alive HTTP/1.1 client for KDF's RPC on loopback.

KDF speaks one thing, ``POST /`` with a JSON body, so this client does exactly that: asyncio
streams for I/O, ``httptools`` (llhttp) for parsing responses, and a bounded pool of keep-alive
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

import httptools
import msgspec

from kdf_remote.kdf.errors import KdfUnreachable

__all__ = ["DEFAULT_MAX_CONNECTIONS", "KdfTransport", "RawResponse"]

DEFAULT_MAX_CONNECTIONS = 32
"""Upper bound of open connections per transport; further callers wait for a free one."""
_READ_CHUNK = 65536


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


class _Connection:
    """One keep-alive connection and its response parser; never used by two requests at once."""

    __slots__ = (
        "_body",
        "_complete",
        "_headers",
        "_headers_done",
        "_keep_alive",
        "_parser",
        "_reader",
        "_writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._complete = False
        self._headers_done = False
        self._keep_alive = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        # llhttp resets its flags after this callback, so the answer must be read here.
        self._keep_alive = self._parser.should_keep_alive()

    @property
    def reusable(self) -> bool:
        """False once the peer closed or reset the idle connection."""
        return not (
            self._writer.is_closing()
            or self._reader.at_eof()
            or self._reader.exception() is not None
        )

    def _body_ends_at_eof(self) -> bool:
        names = {name for name, _ in self._headers}
        return self._headers_done and not {"content-length", "transfer-encoding"} & names

    async def request(self, head: bytes, body: bytes) -> tuple[RawResponse, bool]:
        """Send one request; return the response and whether the connection may be reused."""
        self._headers = []
        self._body = []
        self._complete = False
        self._headers_done = False
        self._keep_alive = False
        self._writer.write(head + body if len(body) < _READ_CHUNK else head)
        if len(body) >= _READ_CHUNK:
            self._writer.write(body)
        await self._writer.drain()
        while not self._complete:
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                if self._body_ends_at_eof():
                    self._keep_alive = False
                    break
                raise ConnectionResetError("KDF closed the connection before a full response")
            self._parser.feed_data(chunk)
        response = RawResponse(
            status=self._parser.get_status_code(),
            headers=tuple(self._headers),
            body=b"".join(self._body),
        )
        return response, self._keep_alive

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()


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
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=_READ_CHUNK)
        return _Connection(reader, writer)

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
