"""KdfTransport against real loopback sockets: keep-alive, pool bound, broken peers, timeouts.

The peer here is a raw asyncio server so that each test can misbehave in one precise way
(stall, cut a response, close an idle connection); the happy path against kdf-sim is covered by
the supervisor's integration tests.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import pytest

from kdf_remote.kdf import KdfTransport, KdfUnreachable

pytestmark = pytest.mark.integration

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]
PeerFactory = Callable[[Handler], Awaitable["Peer"]]


@dataclass
class Peer:
    """A loopback HTTP peer; ``handler(body, writer)`` answers and returns False to hang up."""

    handler: Handler
    connections: int = 0
    requests: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read requests one after another and hand each body to the handler."""
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests += 1
                if not await self.handler(body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            writer.close()


def response(body: bytes, *, extra: bytes = b"") -> bytes:
    """A complete HTTP/1.1 200 response with Content-Length."""
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\n"
        + extra
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
    """Answer with the request body, as JSON result."""
    writer.write(response(b'{"result":' + body + b"}"))
    await writer.drain()
    return True


@pytest.fixture
async def peer_factory() -> AsyncIterator[PeerFactory]:
    """Start loopback peers on free ports; close them all afterwards."""
    peers: list[Peer] = []

    async def make(handler: Handler) -> Peer:
        peer = Peer(handler)
        peer.server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        assert peer.server is not None
        peer.server.close()
        for writer in peer.writers:
            writer.close()
        await peer.server.wait_closed()


async def test_sequential_requests_reuse_one_connection(peer_factory: PeerFactory) -> None:
    """Keep-alive: many sequential calls travel over a single connection."""
    peer = await peer_factory(echo)
    transport = KdfTransport("127.0.0.1", peer.port)
    for i in range(50):
        answer = await transport.post(b'{"n":%d}' % i, timeout=5)
        assert answer.status == 200
        assert msgspec.json.decode(answer.body) == {"result": {"n": i}}
    assert answer.header("Access-Control-Allow-Origin") == "*"
    assert peer.connections == 1
    await transport.close()


async def test_concurrent_requests_stay_matched_and_bounded(peer_factory: PeerFactory) -> None:
    """400 concurrent calls each get their own answer; connections never exceed the pool size."""

    async def slow_echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.001)
        return await echo(body, writer)

    peer = await peer_factory(slow_echo)
    transport = KdfTransport("127.0.0.1", peer.port, max_connections=8)
    answers = await asyncio.gather(
        *(transport.post(b'{"n":%d}' % i, timeout=30) for i in range(400))
    )
    assert [msgspec.json.decode(a.body)["result"]["n"] for a in answers] == list(range(400))
    assert 1 <= peer.connections <= 8
    await transport.close()


async def test_connection_refused_is_unreachable() -> None:
    """Nothing listening: KdfUnreachable, not an OSError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = KdfTransport("127.0.0.1", port)
    with pytest.raises(KdfUnreachable, match="did not answer"):
        await transport.post(b"{}", timeout=5)
    await transport.close()


async def test_timeout_is_unreachable_and_connection_discarded(peer_factory: PeerFactory) -> None:
    """A peer that never answers gives KdfUnreachable; the next call uses a fresh connection."""
    stall = asyncio.Event()

    async def maybe_stall(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b'"stall"':
            await stall.wait()
            return False
        return await echo(body, writer)

    peer = await peer_factory(maybe_stall)
    transport = KdfTransport("127.0.0.1", peer.port)
    with pytest.raises(KdfUnreachable, match="within"):
        await transport.post(b'"stall"', timeout=0.2)
    answer = await transport.post(b'"ok"', timeout=5)
    assert answer.body == b'{"result":"ok"}'
    assert peer.connections == 2
    stall.set()
    await transport.close()


async def test_truncated_response_is_unreachable_then_recovers(peer_factory: PeerFactory) -> None:
    """A connection cut mid-body raises KdfUnreachable and is not reused."""

    async def cut(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b'"cut"':
            writer.write(response(b'{"result":"this is long"}')[:-5])
            await writer.drain()
            return False
        return await echo(body, writer)

    peer = await peer_factory(cut)
    transport = KdfTransport("127.0.0.1", peer.port)
    with pytest.raises(KdfUnreachable):
        await transport.post(b'"cut"', timeout=5)
    assert (await transport.post(b'"ok"', timeout=5)).body == b'{"result":"ok"}'
    await transport.close()


async def test_garbage_response_is_unreachable(peer_factory: PeerFactory) -> None:
    """Bytes that are not HTTP raise KdfUnreachable (the parser error does not leak out)."""

    async def garbage(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        return False

    peer = await peer_factory(garbage)
    transport = KdfTransport("127.0.0.1", peer.port)
    with pytest.raises(KdfUnreachable):
        await transport.post(b"{}", timeout=5)
    await transport.close()


async def test_chunked_and_close_delimited_bodies(peer_factory: PeerFactory) -> None:
    """Chunked bodies are joined; a body ended by connection close is read to the end."""

    async def framed(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b'"chunked"':
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b'5\r\n{"res\r\n8\r\nult":42}\r\n0\r\n\r\n'
            )
            await writer.drain()
            return True
        writer.write(
            b'HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n{"error":"x"}'
        )
        await writer.drain()
        return False

    peer = await peer_factory(framed)
    transport = KdfTransport("127.0.0.1", peer.port)
    chunked = await transport.post(b'"chunked"', timeout=5)
    assert chunked.body == b'{"result":42}'
    closing = await transport.post(b'"close"', timeout=5)
    assert (closing.status, closing.body) == (500, b'{"error":"x"}')
    assert peer.connections == 1
    assert (await transport.post(b'"chunked"', timeout=5)).status == 200
    assert peer.connections == 2
    await transport.close()


async def test_idle_connection_closed_by_peer_is_not_used(peer_factory: PeerFactory) -> None:
    """After the peer drops an idle keep-alive connection, the next call still succeeds."""
    peer = await peer_factory(echo)
    transport = KdfTransport("127.0.0.1", peer.port)
    assert (await transport.post(b"1", timeout=5)).status == 200
    for writer in peer.writers:
        writer.close()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if peer.connections == 1 and all(w.is_closing() for w in peer.writers):
            break
    await asyncio.sleep(0.05)
    assert (await transport.post(b"2", timeout=5)).body == b'{"result":2}'
    assert peer.connections == 2
    await transport.close()


async def test_cancelled_call_does_not_poison_the_pool(peer_factory: PeerFactory) -> None:
    """Cancelling a call mid-flight drops its connection; later answers are not mixed up."""
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def gated(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b'"slow"':
            arrived.set()
            await release.wait()
        return await echo(body, writer)

    peer = await peer_factory(gated)
    transport = KdfTransport("127.0.0.1", peer.port, max_connections=1)
    slow = asyncio.create_task(transport.post(b'"slow"', timeout=30))
    await asyncio.wait_for(arrived.wait(), 30)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    release.set()
    assert (await transport.post(b'"fast"', timeout=5)).body == b'{"result":"fast"}'
    await transport.close()


async def test_closed_transport_refuses_calls(peer_factory: PeerFactory) -> None:
    """After close(), calls raise KdfUnreachable and idle connections are gone."""
    peer = await peer_factory(echo)
    transport = KdfTransport("127.0.0.1", peer.port)
    await transport.post(b"1", timeout=5)
    await transport.close()
    assert transport.closed
    with pytest.raises(KdfUnreachable, match="closed"):
        await transport.post(b"1", timeout=5)


def test_pool_size_must_be_positive() -> None:
    """A pool of zero connections is a configuration error."""
    with pytest.raises(ValueError, match="max_connections"):
        KdfTransport("127.0.0.1", 1, max_connections=0)
