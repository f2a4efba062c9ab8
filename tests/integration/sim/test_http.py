"""kdf-sim's HTTP layer on real loopback sockets: framing, keep-alive, CORS, SSE (facts 2.1)."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, start_sim

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., dict[str, object]]
VERSION_BODY = b'{"method":"version"}'


class _KeepOpen(io.BufferedReader):
    """A socket reader http.client cannot close, so several responses share its buffer."""

    def close(self) -> None:
        return

    def really_close(self) -> None:
        super().close()


class _FileSock:
    """Hands http.client the shared reader instead of a fresh `makefile()`."""

    def __init__(self, stream: _KeepOpen) -> None:
        self._stream = stream

    def makefile(self, *_args: object, **_kwargs: object) -> _KeepOpen:
        return self._stream


class RawConnection:
    """One TCP connection to kdf-sim, written byte by byte, answers parsed by http.client."""

    def __init__(self, sim: RunningSim) -> None:
        self.sock = socket.create_connection((sim.host, sim.port), timeout=30)
        self.stream = _KeepOpen(socket.SocketIO(self.sock, "rb"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: str = "POST") -> http.client.HTTPResponse:
        response = http.client.HTTPResponse(_FileSock(self.stream), method=method)  # type: ignore[arg-type]
        response.begin()
        return response

    def is_closed_by_peer(self) -> bool:
        return self.stream.read(1) == b""

    def close(self) -> None:
        self.stream.really_close()
        self.sock.close()


@pytest.fixture
def raw(sim: RunningSim) -> Iterator[RawConnection]:
    """A raw connection to the `sim` fixture's RPC."""
    connection = RawConnection(sim)
    yield connection
    connection.close()


def _post(body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST / HTTP/"
        + version
        + b"\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def test_keep_alive_serves_many_requests(raw: RawConnection) -> None:
    """HTTP/1.1 keeps the connection open across requests."""
    for _ in range(5):
        raw.send(_post(VERSION_BODY))
        response = raw.response()
        assert response.status == 200
        assert json.loads(response.read())["result"] == "2.5.1-beta_kdfsim0"
        assert response.getheader("connection") is None


def test_pipelined_requests_answer_in_order(raw: RawConnection, rpc_password: str) -> None:
    """Requests sent back to back in one write are answered in order."""
    second = json.dumps(
        {"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": rpc_password, "id": 9}
    )
    raw.send(_post(VERSION_BODY) + _post(second.encode()) + _post(b"[]"))
    assert json.loads(raw.response().read())["result"] == "2.5.1-beta_kdfsim0"
    assert json.loads(raw.response().read()) == {"mmrpc": "2.0", "result": {"coins": []}, "id": 9}
    assert json.loads(raw.response().read()) == []


def test_body_split_across_writes(raw: RawConnection) -> None:
    """A body arriving in pieces is assembled by Content-Length."""
    request = _post(VERSION_BODY)
    for i in range(0, len(request), 7):
        raw.send(request[i : i + 7])
    response = raw.response()
    body = response.read()
    assert response.status == 200
    assert int(response.getheader("content-length", "0")) == len(body)


def test_chunked_request_body(raw: RawConnection) -> None:
    """Transfer-Encoding: chunked request bodies are accepted."""
    raw.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'a\r\n{"method":\r\na\r\n"version"}\r\n0\r\n\r\n'
    )
    assert json.loads(raw.response().read())["result"] == "2.5.1-beta_kdfsim0"


def test_expect_100_continue(raw: RawConnection) -> None:
    """`Expect: 100-continue` gets an interim 100 before the body is sent."""
    raw.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: "
        + str(len(VERSION_BODY)).encode()
        + b"\r\n\r\n"
    )
    assert raw.stream.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert raw.stream.readline() == b"\r\n"
    raw.send(VERSION_BODY)
    assert raw.response().status == 200


def test_http10_closes_after_answer(raw: RawConnection) -> None:
    """An HTTP/1.0 request without keep-alive is answered, then the connection closes."""
    raw.send(_post(VERSION_BODY, version=b"1.0"))
    response = raw.response()
    assert response.status == 200
    response.read()
    assert raw.is_closed_by_peer()


def test_connection_close_header(raw: RawConnection) -> None:
    """`Connection: close` is honoured."""
    raw.send(_post(VERSION_BODY, extra=b"Connection: close\r\n"))
    response = raw.response()
    assert response.getheader("connection") == "close"
    response.read()
    assert raw.is_closed_by_peer()


def test_malformed_http_gets_400_and_close(raw: RawConnection) -> None:
    """Garbage that is not HTTP is answered 400 and the connection is closed."""
    raw.send(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
    response = raw.response()
    assert response.status == 400
    response.read()
    assert raw.is_closed_by_peer()


def test_options_preflight(sim: RunningSim) -> None:
    """OPTIONS on any path: 200 with KDF's four CORS headers."""
    for path in ("/", "/anything"):
        status, headers, body = sim.request("OPTIONS", path)
        assert status == 200
        assert body == b""
        assert headers["access-control-allow-origin"] == "http://localhost:3000"
        assert headers["access-control-allow-methods"] == "POST, OPTIONS"
        assert headers["access-control-allow-headers"] == "Content-Type"
        assert headers["access-control-max-age"] == "3600"


def test_get_is_500_json_error(sim: RunningSim) -> None:
    """GET / (empty body) is a JSON parse failure: 500 `{"error": ...}`, never 200."""
    status, headers, body = sim.request("GET", "/")
    assert status == 500
    assert set(json.loads(body)) == {"error"}
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    status, _, body = sim.request("GET", "/", VERSION_BODY)
    assert status == 500
    assert json.loads(body)["error"].endswith("Only POST requests are supported!")


def test_cors_origin_on_every_response(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """The configured rpccors is sent on success and error answers alike; the path is ignored."""
    with start_sim(sim_config(rpccors="https://app.example"), cwd=tmp_path) as sim:
        for method, path, body in (
            ("POST", "/", VERSION_BODY),
            ("POST", "/some/path", VERSION_BODY),
            ("POST", "/", b"{bad"),
            ("POST", "/", b'{"method":"stop"}'),
            ("PUT", "/", VERSION_BODY),
        ):
            _, headers, _ = sim.request(method, path, body)
            assert headers["access-control-allow-origin"] == "https://app.example"
        assert sim.request("POST", "/some/path", VERSION_BODY)[0] == 200


def test_legacy_content_type_only_on_legacy_success(sim: RunningSim, rpc_password: str) -> None:
    """Content-Type is set on legacy results only; clients must not rely on it."""
    _, headers, _ = sim.request("POST", "/", VERSION_BODY)
    assert headers["content-type"] == "application/json"
    v2 = json.dumps({"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": rpc_password})
    _, headers, _ = sim.request("POST", "/", v2.encode())
    assert "content-type" not in headers


def test_many_concurrent_connections(sim: RunningSim) -> None:
    """Fifty clients at once, each with several keep-alive requests, all get answers."""

    def client(_: int) -> int:
        connection = http.client.HTTPConnection(sim.host, sim.port, timeout=30)
        ok = 0
        try:
            for _ in range(10):
                connection.request("POST", "/", body=VERSION_BODY)
                response = connection.getresponse()
                ok += response.status == 200 and b"kdfsim0" in response.read()
        finally:
            connection.close()
        return ok

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        assert sum(pool.map(client, range(50))) == 500


def test_large_batch(sim: RunningSim) -> None:
    """A large batch body is read completely and answered element by element."""
    status, body = sim.rpc([{"method": "version"}] * 2000)
    assert status == 200
    assert isinstance(body, list)
    assert len(body) == 2000


def test_event_stream_disabled_without_config(sim: RunningSim) -> None:
    """GET /event-stream without event_streaming_configuration is an error."""
    status, _, body = sim.request("GET", "/event-stream")
    assert status == 500
    assert body == b"Event streaming is disabled"


def test_event_stream_heartbeat_frames(
    tmp_path: Path, sim_config: ConfigFactory, rpc_password: str
) -> None:
    """With streaming configured, SSE (unauthenticated) delivers `data: {...}` frames."""
    config = sim_config(
        event_streaming_configuration={"access_control_allow_origin": "*", "worker_path": "w.js"}
    )
    with start_sim(config, cwd=tmp_path) as sim:
        raw = RawConnection(sim)
        try:
            raw.send(b"GET /event-stream?id=5 HTTP/1.1\r\nHost: x\r\n\r\n")
            response = raw.response(method="GET")
            assert response.status == 200
            assert response.getheader("content-type") == "text/event-stream"
            assert response.getheader("access-control-allow-origin") == "*"
            enable = {
                "mmrpc": "2.0",
                "method": "stream::heartbeat::enable",
                "userpass": rpc_password,
                "params": {"client_id": 5, "config": {"stream_interval_seconds": 0.05}},
            }
            assert sim.rpc(enable) == (
                200,
                {"mmrpc": "2.0", "result": {"streamer_id": "HEARTBEAT"}, "id": None},
            )
            frames: list[dict[str, object]] = []
            while len(frames) < 3:
                line = response.readline()
                if line.startswith(b"data: "):
                    frames.append(json.loads(line[6:]))
                else:
                    assert line == b"\n"
            assert all(frame["_type"] == "HEARTBEAT" for frame in frames)
        finally:
            raw.close()
        assert sim.request("GET", "/event-stream?id=x")[0] == 500
