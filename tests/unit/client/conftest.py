"""Fixtures for the client's unit tests: an in-memory fake daemon behind httpx.MockTransport."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest

from kdf_remote.client import _async, _http, _sync
from kdf_remote.client._core import RetryPolicy
from kdf_remote.client._http import ClientSettings
from kdf_remote.client.profiles import Profile, save_profile, set_current_profile

API_KEY = "kdfr_" + "k" * 43


def _status(name: str, state: str, pid: int | None) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "pid": pid,
        "restarts": 0,
        "rpc_port": 7783,
        "data_dir": f"/var/lib/kdf/{name}",
        "kdf_version": "2.5.1-beta_kdfsim0" if pid else None,
    }


@dataclass
class FakeDaemon:
    """Enough of the REST API of design.md to drive the client, with knobs for failures."""

    states: dict[str, str] = field(default_factory=lambda: {"main": "stopped"})
    stored_config: dict[str, Any] | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    down: bool = False
    health_streams: list[list[bytes]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=lambda: ["line one", "line two"])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("Connection refused", request=request)
        path = request.url.path
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "version": "0.1.0"})
        if request.headers.get("Authorization") != f"Bearer {API_KEY}" and path != "/v1/auth/token":
            return _error(401, "unauthorized", "invalid API key")
        if path == "/v1/auth/token":
            return _error(404, "not_found", "no such route")
        if path == "/v1/instances":
            return httpx.Response(200, json={"instances": [self._out(n) for n in self.states]})
        parts = path.split("/")
        if len(parts) < 4 or parts[3] not in self.states:
            return _error(
                404, "not_found", f"no instance named {parts[3] if len(parts) > 3 else ''!r}"
            )
        name = parts[3]
        action = parts[4] if len(parts) > 4 else ""
        return self._instance(request, name, action)

    def _out(self, name: str) -> dict[str, Any]:
        state = self.states[name]
        return _status(name, state, 4242 if state == "running" else None)

    def _instance(self, request: httpx.Request, name: str, action: str) -> httpx.Response:
        if action == "":
            return httpx.Response(200, json=self._out(name))
        if action == "start":
            body = request.content
            if not body and self.stored_config is None:
                return _error(409, "no_stored_config", "send a KDF startup config in the body")
            if body:
                self.stored_config = msgspec.json.decode(body)
            if self.states[name] == "running":
                return _error(409, "invalid_state", "already running")
            self.states[name] = "running"
            return httpx.Response(200, json=self._out(name))
        if action == "stop":
            self.states[name] = "stopped"
            return httpx.Response(200, json=self._out(name))
        if action == "rpc":
            if self.states[name] != "running":
                return _error(409, "not_running", "instance is not running")
            method = msgspec.json.decode(request.content).get("method")
            if method == "version":
                return httpx.Response(
                    200, json={"result": "2.5.1-beta_kdfsim0", "datetime": "2025"}
                )
            return httpx.Response(500, json={"error": "rpc:1] No such method"})
        if action == "logs":
            if request.url.params.get("follow") == "true":
                stream = "".join(
                    f"event: log\ndata: {msgspec.json.encode({'line': x}).decode()}\n\n"
                    for x in self.log_lines
                )
                return httpx.Response(
                    200, content=stream.encode(), headers={"content-type": "text/event-stream"}
                )
            tail = int(request.url.params.get("tail", "100"))
            lines = [{"line": x} for x in self.log_lines[-tail:]] if tail else []
            return httpx.Response(200, json={"name": name, "lines": lines})
        if action == "health":
            if request.url.params.get("watch") == "true":
                if not self.health_streams:
                    raise httpx.ConnectError("Connection refused", request=request)
                chunks = self.health_streams.pop(0)
                return httpx.Response(
                    200, content=b"".join(chunks), headers={"content-type": "text/event-stream"}
                )
            return httpx.Response(
                200,
                json={
                    "name": name,
                    "state": self.states[name],
                    "healthy": self.states[name] == "running",
                    "rpc_ok": True,
                    "at": "2025-01-01T00:00:00Z",
                },
            )
        return _error(404, "not_found", "no such route")


def _error(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": detail})


def health_event(seq: int, state: str = "running") -> bytes:
    """One SSE health event as the daemon sends it."""
    data = msgspec.json.encode(
        {
            "name": "main",
            "state": state,
            "healthy": state == "running",
            "rpc_ok": True,
            "at": "2025-01-01T00:00:00Z",
        }
    )
    return b"event: health\nid: " + str(seq).encode() + b"\ndata: " + data + b"\n\n"


@pytest.fixture
def fake_daemon() -> FakeDaemon:
    """A fresh fake daemon."""
    return FakeDaemon()


@pytest.fixture
def settings() -> ClientSettings:
    """Settings of a daemon on loopback with no retry waits."""
    return ClientSettings(
        "http://127.0.0.1:8000",
        api_key=API_KEY,
        retry=RetryPolicy(attempts=3, initial=0.0, jitter=False),
    )


@pytest.fixture
def daemon_profile() -> Profile:
    """A stored, current profile pointing at the fake daemon."""
    profile = Profile(name="fake", url="http://127.0.0.1:8000", api_key=API_KEY)
    save_profile(profile)
    set_current_profile("fake")
    return profile


@pytest.fixture
def wire_cli(monkeypatch: pytest.MonkeyPatch, fake_daemon: FakeDaemon) -> Callable[[], FakeDaemon]:
    """Route every controller the CLI builds to the fake daemon (sync and async)."""

    def with_transport(
        real: Callable[..., dict[str, Any]], transport: Any
    ) -> Callable[..., dict[str, Any]]:
        def patched(settings: ClientSettings, _transport: Any) -> dict[str, Any]:
            settings.retry = RetryPolicy(attempts=2, initial=0.0, jitter=False)
            return real(settings, transport)

        return patched

    transport = httpx.MockTransport(fake_daemon)
    monkeypatch.setattr(_sync, "client_kwargs", with_transport(_http.client_kwargs, transport))
    monkeypatch.setattr(_async, "client_kwargs", with_transport(_http.client_kwargs, transport))
    return lambda: fake_daemon


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the sync client's sleeps instead of waiting (its own `time` only)."""
    slept: list[float] = []
    monkeypatch.setattr(
        _sync, "time", SimpleNamespace(monotonic=time.monotonic, sleep=slept.append)
    )
    return slept


@pytest.fixture
def sse_health() -> Callable[..., bytes]:
    """Builder of one SSE health event."""
    return health_event


@pytest.fixture
def api_key() -> str:
    """The key the fake daemon accepts."""
    return API_KEY
