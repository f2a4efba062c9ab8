"""``GET /event-stream``: KDF's Server-Sent Events relayed byte for byte from loopback.

KDF serves its event stream on the RPC port. The listener opens one plain HTTP/1.1 connection to
it per client stream, sends the client's query (``?id=<u64>``) and copies KDF's status, the few
headers that matter to a browser, and every body byte back, until KDF ends the stream, the client
goes away, the stream's time is up, or the daemon shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import httptools

from kdf_remote.daemon.compat.backend import BackendError

__all__ = ["PASSED_HEADERS", "relay_event_stream", "valid_query"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PASSED_HEADERS: Final = frozenset(
    {b"content-type", b"cache-control", b"access-control-allow-origin", b"content-length"}
)
"""KDF's response headers the client gets (framing is re-done by the listener's server)."""
_READ_CHUNK: Final = 65536
_CONNECT_TIMEOUT: Final = 10.0


def valid_query(query: bytes) -> bool:
    """True when ``query`` can be put on a request line as is (visible ASCII, no ``#``)."""
    return all(0x21 <= byte <= 0x7E and byte != 0x23 for byte in query)


class _Response:
    """httptools callbacks collecting KDF's answer until it can be sent on."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in PASSED_HEADERS:
            self.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Pump:
    """Copies one KDF response to the client."""

    def __init__(self, send: Send, extra_headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._extra = extra_headers
        self.response = _Response()
        self._parser = httptools.HttpResponseParser(self.response)
        self.started = False

    async def _flush(self) -> None:
        response = self.response
        if response.headers_done and not self.started:
            self.started = True
            response.status = self._parser.get_status_code()
            await self._send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [*response.headers, *self._extra],
                }
            )
        if self.started and response.chunks:
            chunks, response.chunks = response.chunks, []
            await self._send(
                {"type": "http.response.body", "body": b"".join(chunks), "more_body": True}
            )

    async def run(self, host: str, port: int, target: bytes) -> None:
        """Request ``target`` from KDF and copy the answer until it ends.

        Raises:
            BackendError: KDF did not answer (only before anything was sent to the client).
        """
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port, limit=_READ_CHUNK)
        except (OSError, TimeoutError) as exc:
            raise BackendError(502, f"KDF's event stream did not answer: {exc}") from None
        try:
            writer.write(
                b"GET " + target + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n"
                b"Accept: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            while not self.response.complete:
                chunk = await reader.read(_READ_CHUNK)
                if not chunk:
                    break
                self._parser.feed_data(chunk)
                await self._flush()
        except (OSError, httptools.HttpParserError) as exc:
            if not self.started:
                raise BackendError(502, f"KDF's event stream broke: {exc}") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not self.started:
            raise BackendError(502, "KDF closed its event stream without an answer")


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def relay_event_stream(
    *,
    host: str,
    port: int,
    target: bytes,
    receive: Receive,
    send: Send,
    extra_headers: list[tuple[bytes, bytes]],
    max_duration: float,
    shutdown: asyncio.Event,
) -> int:
    """Relay KDF's ``target`` (``/event-stream?...``) to the client; returns KDF's status.

    Raises:
        BackendError: KDF did not answer; nothing was sent to the client.
    """
    pump = _Pump(send, extra_headers)
    copying = asyncio.create_task(pump.run(host, port, target))
    tasks = [
        copying,
        asyncio.create_task(_client_gone(receive)),
        asyncio.create_task(shutdown.wait()),
    ]
    try:
        await asyncio.wait(tasks, timeout=max_duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        outcome = await asyncio.gather(*tasks, return_exceptions=True)
    failure = outcome[0]
    if isinstance(failure, Exception):
        raise failure
    if pump.started:
        # The stream ends here whatever ended it: KDF, the client, the deadline or shutdown.
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    return pump.response.status
