"""The daemon's uvicorn protocol: RPC answers leave in one write, the rest as uvicorn does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from kdf_remote.daemon.http_protocol import HeadJoiningWriter, daemon_protocol
from kdf_remote.daemon.proxy import is_rpc_route

pytestmark = pytest.mark.unit

DEADLINE_S = 20.0
ANSWER = b'{"result":"2.5.1"}'


class RecordingTransport(asyncio.Transport):
    """A transport that keeps every write separately (one entry per ``write`` call)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.answered = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        if bytes(data).endswith(ANSWER):
            self.answered.set()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def answer(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering every request with one head and one JSON body."""
    while (await receive()).get("more_body", False):
        pass
    body = ANSWER
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def serve_one(request: bytes) -> RecordingTransport:
    """Feed ``request`` to the daemon's protocol class and wait until the answer is written."""
    config = uvicorn.Config(
        answer, http=daemon_protocol(lane=None, is_single_body=is_rpc_route), log_config=None
    )
    config.load()
    protocol_class = config.http_protocol_class
    protocol = protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.wait_for(transport.answered.wait(), DEADLINE_S)
    protocol.connection_lost(None)
    return transport


def post(path: str, *extra: str) -> bytes:
    body = b'{"method":"version"}'
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_rpc_answer_is_one_write() -> None:
    """POST /v1/instances/main/rpc: head and body leave in a single write."""
    transport = await serve_one(post("/v1/instances/main/rpc"))
    assert len(transport.writes) == 1
    (data,) = transport.writes
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b'\r\n\r\n{"result":"2.5.1"}')


async def test_other_routes_keep_uvicorn_writes() -> None:
    """Any other route is untouched: uvicorn writes the head, then the body."""
    transport = await serve_one(post("/v1/instances/main/start"))
    assert len(transport.writes) == 2
    assert transport.writes[1] == b'{"result":"2.5.1"}'


async def test_expect_continue_is_not_held() -> None:
    """Expect: 100-continue keeps the plain transport: the interim answer is not held back."""
    transport = await serve_one(post("/v1/instances/main/rpc", "Expect: 100-continue"))
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert transport.writes[-1] == b'{"result":"2.5.1"}'


def test_writer_flushes_a_held_head_on_close() -> None:
    """An app that fails between head and body: close still sends the head it held."""
    transport = RecordingTransport()
    writer = HeadJoiningWriter(transport)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.writes == []
    writer.close()
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert transport.closed


def test_writer_passes_writes_through_after_the_first_body() -> None:
    """Only the head waits: the first body write carries it, later writes go straight out."""
    transport = RecordingTransport()
    writer = HeadJoiningWriter(transport)
    for chunk in (b"HEAD", b"one", b"two"):
        writer.write(chunk)
    assert transport.writes == [b"HEADone", b"two"]
