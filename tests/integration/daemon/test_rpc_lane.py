"""The RPC lane on a real daemon: same answers, refusals, headers and audit as the ASGI way.

Small ``Content-Length`` RPC requests are served inside the HTTP protocol (the lane); chunked,
large, pipelined and ``100-continue`` requests go through ASGI. Both must look the same to a
caller and to the audit log.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from _loopback import DEADLINE_S

from .conftest import (
    ADMIN_KEY,
    VIEWER_KEY,
    Daemon,
    DaemonFactory,
    startup_config,
)

pytestmark = pytest.mark.integration

RPC = "/v1/instances/main/rpc"
VERSION = b'{"method":"version"}'


@pytest.fixture
def daemon(daemons: DaemonFactory) -> Daemon:
    """A daemon with ``main`` running on kdf-sim."""
    started = daemons.start(daemons.write_config(), "--stop-instances-on-exit")
    with started.client() as http:
        answer = http.post("/v1/instances/main/start", json=startup_config())
        assert answer.status_code == 200, answer.text
    return started


def audit_lines(http: httpx.Client) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = http.get("/v1/audit", params={"limit": 1000}).json()[
        "entries"
    ]
    return entries


def chunked(body: bytes) -> Iterator[bytes]:
    """A generator body: httpx sends it with ``Transfer-Encoding: chunked`` (the ASGI way)."""
    yield body


def raw_exchange(daemon: Daemon, request: bytes, responses: int) -> bytes:
    """Send raw bytes on one connection; read until ``responses`` complete answers arrived."""
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=DEADLINE_S) as sock:
        sock.sendall(request)
        received = b""
        while received.count(b"HTTP/1.1 ") < responses or not _complete(received, responses):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def _complete(data: bytes, responses: int) -> bool:
    """Whether ``data`` holds ``responses`` whole answers (each with a Content-Length body)."""
    rest = data
    for _ in range(responses):
        head, sep, body = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        if len(body) < length:
            return False
        rest = body[length:]
    return True


def rpc_request(body: bytes, *extra: str, key: str = ADMIN_KEY) -> bytes:
    lines = [
        f"POST {RPC} HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-API-Key: {key}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_lane_and_asgi_answer_alike(daemon: Daemon) -> None:
    """A call with a Content-Length body (lane) and a chunked one (ASGI) get the same answer."""
    with daemon.client() as http:
        lane = http.post(RPC, content=VERSION)
        asgi = http.post(RPC, content=chunked(VERSION))
        for answer in (lane, asgi):
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["content-type"] == "application/json"
        assert lane.json() == asgi.json()
        assert lane.json()["result"]
        # Both calls are audited alike: action, target, outcome and the method called.
        calls = [e for e in audit_lines(http) if e["action"] == "POST /v1/instances/{name}/rpc"]
        assert len(calls) >= 2
        for entry in calls[-2:]:
            assert (entry["target"], entry["outcome"], entry["status"]) == ("main", "ok", 200)
            assert entry["detail"] == "methods: version"
            assert entry["actor"]
        metrics = http.get("/v1/metrics").text
        assert 'route="/v1/instances/{name}/rpc"' in metrics


def test_lane_refusals_match_the_gate(daemon: Daemon) -> None:
    """No key: 401 with WWW-Authenticate; a viewer: 403; both audited as denied."""
    with daemon.client(key=None) as anonymous:
        refused = anonymous.post(RPC, content=VERSION)
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    with daemon.client(key=VIEWER_KEY) as viewer:
        forbidden = viewer.post(RPC, content=VERSION)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "role_required"
    with daemon.client() as http:
        denied = [e for e in audit_lines(http) if e["outcome"] == "denied"]
    assert any(e["status"] == 401 and e["action"] == f"POST {RPC}" for e in denied)
    assert any(e["status"] == 403 and str(e["detail"]).startswith("role_required") for e in denied)


def test_pipelined_requests_are_answered_in_order(daemon: Daemon) -> None:
    """Two requests in one write: the second waits in uvicorn's queue, answers keep order."""
    first = rpc_request(VERSION)
    second = rpc_request(b'{"method":"get_enabled_coins"}')
    data = raw_exchange(daemon, first + second, responses=2)
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    assert answers[0].startswith(b"200") and b'"result":"' in answers[0]
    assert answers[1].startswith(b"200") and b'"result":[]' in answers[1]


def test_connection_close_is_honoured(daemon: Daemon) -> None:
    """``Connection: close``: the lane answers with it and closes the connection."""
    data = raw_exchange(daemon, rpc_request(VERSION, "Connection: close"), responses=1)
    head = data.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"connection: close" in head


def test_large_batch_goes_the_asgi_way(daemon: Daemon) -> None:
    """A body over the lane's limit (64 KiB) is still proxied, through ASGI."""
    batch = [{"method": "version", "pad": "x" * 100} for _ in range(800)]
    body = json.dumps(batch).encode()
    assert len(body) > 64 * 1024
    with daemon.client() as http:
        answer = http.post(RPC, content=body)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == len(batch)


def test_allowed_hosts_hold_on_the_lane_and_on_asgi(daemons: DaemonFactory) -> None:
    """With ``allowed_hosts``, another Host is refused (400) on the RPC lane and elsewhere."""
    config = daemons.write_config(security="  allowed_hosts: [127.0.0.1, kdf.test]\n")
    daemon = daemons.start(config, "--stop-instances-on-exit")
    with daemon.client() as http:
        started = http.post("/v1/instances/main/start", json=startup_config())
        assert started.status_code == 200, started.text
        assert http.post(RPC, content=VERSION, headers={"Host": "kdf.test:8443"}).is_success
        for path, method in ((RPC, "POST"), ("/v1/instances", "GET")):
            refused = http.request(
                method,
                path,
                content=VERSION if method == "POST" else None,
                headers={"Host": "kdfXtest", "X-Forwarded-Host": "kdf.test"},
            )
            assert refused.status_code == 400, path
            assert refused.json()["error"] == "host_not_allowed"
