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
from typing import Any, Final, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeadJoiningWriter", "RoutePredicate", "single_write_protocol"]

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
            self._joined = True
            head, self._head = self._head, _UNSET
            self._transport.write(head + data)

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

    def _flush(self) -> None:
        if self._head and not self._joined:
            self._joined = True
            head, self._head = self._head, _UNSET
            self._transport.write(head)


def single_write_protocol(is_single_body: RoutePredicate) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class, joining head and body for matching routes.

    Passed to uvicorn as ``Config(http=...)``. A request asking for ``100 Continue`` keeps the
    plain transport: the interim response must leave at once, not wait for the body.
    """

    class SingleWriteProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
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

    return SingleWriteProtocol
