"""uvicorn's HTTP protocol, with each RPC answer leaving in one write.

uvicorn writes a response's head the moment the app sends ``http.response.start`` and its body
on ``http.response.body``: two ``send`` system calls and two TCP segments for every proxied KDF
call, and the client wakes up twice. On loopback that second write costs more than everything
the daemon itself does per call (bench/bench_proxy.py measures it), so for the routes named by a
predicate, requests whose whole answer is one head and one body (the RPC proxy, the
``kdf_compat`` listener), the response head is held back and written together with the body.

Everything else (parsing, keep-alive, pipelining, flow control, TLS, timeouts, shutdown) is
uvicorn's own: the subclass only gives the request's response cycle a writer that joins the
head to the first body write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from kdf_remote.daemon.security.middleware import DirectRequest

if TYPE_CHECKING:
    from kdf_remote.daemon.security.middleware import DirectResponse

__all__ = [
    "HeadJoiningWriter",
    "Lane",
    "RoutePredicate",
    "daemon_protocol",
]

RoutePredicate = Callable[[str, str], bool]
"""``(method, path) -> bool``: True for routes whose answers are one head and one body."""

_UNSET: Final = b""


class HeadJoiningWriter:
    """The transport as one response cycle sees it: the head waits for the first body write.

    Only the methods uvicorn's response cycle calls are provided. ``close`` flushes a head still
    held (an app that failed between head and body), so nothing is ever dropped.
    """

    __slots__ = ("_head", "_joined", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head = _UNSET
        self._joined = False

    def write(self, data: bytes) -> None:
        """Hold the first write (the head); send it with the second; pass the rest through."""
        if self._joined:
            self._transport.write(data)
        elif not self._head:
            self._head = data
        else:
            self._flush(data)

    def close(self) -> None:
        """Flush a held head, then close the connection."""
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing (the transport's own answer)."""
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (socket, peer name, SSL object)."""
        return self._transport.get_extra_info(name, default)

    def _flush(self, body: bytes = b"") -> None:
        """Send the held head, with ``body`` when there is one (once; later writes pass)."""
        if self._head and not self._joined:
            self._joined = True
            head, self._head = self._head, _UNSET
            self._transport.write(head + body)


class Lane(Protocol):
    """Answers some requests inside the protocol, without ASGI (the daemon's RPC lane)."""

    @property
    def max_body(self) -> int:
        """Largest body (declared by ``Content-Length``) the lane takes; larger ones: ASGI."""
        ...

    def match(self, method: str, path: str) -> str | None:
        """A key for the request when the lane serves ``method path`` (e.g. the instance)."""
        ...

    async def respond(self, request: DirectRequest, key: str) -> DirectResponse:
        """The whole response; errors are answered in it, never raised.

        The protocol calls the response's ``after`` once it has written it.
        """
        ...


def daemon_protocol(
    *, lane: Lane | None, is_single_body: RoutePredicate
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with the daemon's two hot-path changes.

    Passed to uvicorn as ``Config(http=...)``:

    - ``lane`` answers the requests it matches inside the protocol, once their (small) body is
      read: no ASGI task, scope or wrapped ``send``, and one write for the whole response;
    - routes matching ``is_single_body`` that go through ASGI get their head joined to their
      body (:class:`HeadJoiningWriter`).

    A request asking for ``100 Continue`` takes neither: the interim response must leave at
    once. Ordering is uvicorn's: a lane request holds the connection's response cycle, so a
    pipelined request behind it waits in uvicorn's queue.
    """

    class DaemonProtocol(HttpToolsProtocol):
        _lane_request: _LaneTarget | None = None
        """The lane request whose body is being read (set from headers to message end)."""

        def on_headers_complete(self) -> None:
            target = self._match_lane() if lane is not None else None
            if target is None:
                super().on_headers_complete()
                self._join_head_and_body()
                return
            self._lane_request = target
            self.cycle = RequestResponseCycle(
                scope=self.scope,
                transport=self.transport,
                flow=self.flow,
                logger=self.logger,
                access_logger=self.access_logger,
                access_log=self.access_log,
                default_headers=self.server_state.default_headers,
                message_event=asyncio.Event(),
                expect_100_continue=False,
                keep_alive=self.parser.should_keep_alive(),
                on_response=self.on_response_complete,
            )

        def on_message_complete(self) -> None:
            super().on_message_complete()
            target, self._lane_request = self._lane_request, None
            if target is None or lane is None:
                return
            cycle = self.cycle
            request = DirectRequest(
                method="POST",
                path=target.path,
                raw_path=target.raw_path,
                query_string=target.query,
                peer=self.client[0] if self.client else None,
                headers=self.headers,
                body=bytes(cycle.body),
                tls=self.scheme == "https",
            )
            task = self.loop.create_task(self._serve_lane(lane, cycle, request, target.key))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        def _match_lane(self) -> _LaneTarget | None:
            assert lane is not None
            # None before the connection's first request (uvicorn's annotation omits it).
            cycle = cast("RequestResponseCycle | None", self.cycle)
            parser = self.parser
            if (
                (cycle is not None and not cycle.response_complete)
                or self.expect_100_continue
                or parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1"
                or parser.should_upgrade()
                or not _small_body(self.headers, lane.max_body)
            ):
                return None
            parsed = httptools.parse_url(self.url)
            raw_path = parsed.path
            if b"%" in raw_path or not raw_path.isascii():
                return None  # escaped paths go the ASGI way, which decodes them
            path = raw_path.decode("ascii")
            key = lane.match("POST", path)
            if key is None:
                return None
            query = parsed.query or b""
            scope = self.scope
            scope["method"] = "POST"
            scope["path"] = path
            scope["raw_path"] = raw_path
            scope["query_string"] = query
            return _LaneTarget(key, path, raw_path, query)

        def _join_head_and_body(self) -> None:
            # No path: an upgrade request uvicorn left without a cycle.
            path = cast("dict[str, Any]", self.scope).get("path")
            if (
                self.expect_100_continue
                or path is None
                or not is_single_body(self.scope["method"], path)
            ):
                return
            # The cycle's task was only scheduled (or queued behind a pipelined request); it
            # has not written anything yet, so its writer can still be swapped.
            self.cycle.transport = HeadJoiningWriter(self.transport)  # type: ignore[assignment]

        async def _serve_lane(
            self, lane: Lane, cycle: RequestResponseCycle, request: DirectRequest, key: str
        ) -> None:
            response: DirectResponse | None = None
            try:
                response = await lane.respond(request, key)
                data = _encode(response, self.server_state.default_headers, cycle.keep_alive)
            except Exception:
                self.logger.exception("Exception in the daemon's RPC lane")
                cycle.keep_alive = False
                data = _INTERNAL_ERROR
            if not cycle.disconnected:
                if self.flow.write_paused:
                    await self.flow.drain()
                self.transport.write(data)
                # What uvicorn's cycle does once a response is complete.
                cycle.response_complete = True
                cycle.message_event.set()
                if not cycle.keep_alive:
                    self.transport.close()
                self.on_response_complete()
            if response is not None:
                # The audit line and metrics, after the answer left (also when the client did
                # not wait for it: the call reached KDF all the same).
                try:
                    response.after()
                except Exception:
                    self.logger.exception("Exception recording an RPC lane call")

    return DaemonProtocol


class _LaneTarget(NamedTuple):
    """A request the lane took: its key (e.g. the instance) and its target."""

    key: str
    path: str
    raw_path: bytes
    query: bytes


_INTERNAL_ERROR: Final = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


def _small_body(headers: list[tuple[bytes, bytes]], limit: int) -> bool:
    """A ``Content-Length`` body of at most ``limit`` bytes, and no transfer coding."""
    length: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None:
                return False
            length = value
        elif name == b"transfer-encoding":
            return False
    return length is not None and length.isdigit() and int(length) <= limit


def _encode(
    response: DirectResponse, default_headers: list[tuple[bytes, bytes]], keep_alive: bool
) -> bytes:
    parts = [STATUS_LINE[response.status]]
    for name, value in (*default_headers, *response.headers):
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", response.body)
    return b"".join(parts)
