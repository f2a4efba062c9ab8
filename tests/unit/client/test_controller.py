"""RemoteKdfController and its async twin against an in-memory fake daemon (MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kdf_remote.client import errors
from kdf_remote.client._async import AsyncRemoteKdfController
from kdf_remote.client._core import DEFAULT_STARTUP_CONFIG, Backoff
from kdf_remote.client._http import ClientSettings
from kdf_remote.client._sync import RemoteKdfController
from kdf_remote.client.models import InstanceStatus

pytestmark = pytest.mark.unit


def sync(
    fake: Callable[[httpx.Request], httpx.Response], settings: ClientSettings
) -> RemoteKdfController:
    return RemoteKdfController(settings, transport=httpx.MockTransport(fake))


class TestLifecycle:
    def test_start_default_sends_default_config_when_none_stored(
        self, fake_daemon: Any, settings: ClientSettings
    ) -> None:
        """`start_default` tries the stored config, then sends the documented default."""
        with sync(fake_daemon, settings) as kdf:
            status = kdf.start_default()
        assert isinstance(status, InstanceStatus)
        assert status.state == "running"
        assert fake_daemon.stored_config == DEFAULT_STARTUP_CONFIG
        starts = [r for r in fake_daemon.requests if r.url.path.endswith("/start")]
        assert next(r.content for r in starts) == b""

    def test_stop_status_and_instances(self, fake_daemon: Any, settings: ClientSettings) -> None:
        """stop/status/instances return typed results."""
        fake_daemon.states["main"] = "running"
        with sync(fake_daemon, settings) as kdf:
            assert kdf.status().state == "running"
            assert kdf.stop_kdf().state == "stopped"
            assert [s.name for s in kdf.instances()] == ["main"]

    def test_errors_are_typed(self, fake_daemon: Any, settings: ClientSettings) -> None:
        """404 and 409 from the daemon raise NotFound and Conflict with the daemon's code."""
        fake_daemon.states["main"] = "running"
        with sync(fake_daemon, settings) as kdf:
            with pytest.raises(errors.NotFound):
                kdf.status("nope")
            with pytest.raises(errors.Conflict) as info:
                kdf.start_kdf({"gui": "x"})
        assert info.value.code == "invalid_state"

    def test_wrong_key_is_unauthorized(self, fake_daemon: Any) -> None:
        """A refused key raises Unauthorized (an auth failure)."""
        bad = ClientSettings("http://127.0.0.1:8000", api_key="kdfr_wrong")
        with sync(fake_daemon, bad) as kdf, pytest.raises(errors.Unauthorized) as info:
            kdf.instances()
        assert errors.is_auth_failure(info.value)

    def test_connect_checks_health_and_credentials(
        self, fake_daemon: Any, settings: ClientSettings
    ) -> None:
        """`connect()` answers the daemon's health after an authenticated call."""
        with sync(fake_daemon, settings) as kdf:
            assert kdf.connect().status == "ok"
        assert [r.url.path for r in fake_daemon.requests][-2:] == ["/v1/health", "/v1/instances"]

    def test_plain_http_refused_for_remote_hosts(self) -> None:
        """There is no insecure switch: http is only for loopback."""
        with pytest.raises(errors.ConfigError):
            ClientSettings("http://kdf.example.com:8000")


class TestRetries:
    def test_connect_errors_are_retried_then_raised(
        self, fake_daemon: Any, settings: ClientSettings, no_sleep: list[float]
    ) -> None:
        """A refused connection is retried (bounded) and then raised as ConnectError."""
        fake_daemon.down = True
        with sync(fake_daemon, settings) as kdf, pytest.raises(errors.ConnectError):
            kdf.status()
        assert len(fake_daemon.requests) == 3
        assert len(no_sleep) == 2

    def test_read_error_on_post_is_not_retried(
        self, settings: ClientSettings, no_sleep: list[float]
    ) -> None:
        """A POST whose answer was lost is not repeated (it may have happened)."""
        calls: list[str] = []

        def broken(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/auth/token":
                return httpx.Response(404, json={"error": "not_found", "detail": ""})
            calls.append(request.url.path)
            raise httpx.ReadError("connection reset", request=request)

        with sync(broken, settings) as kdf, pytest.raises(errors.TransportError):
            kdf.stop_kdf()
        assert calls == ["/v1/instances/main/stop"]

    def test_idempotent_get_recovers(
        self, fake_daemon: Any, settings: ClientSettings, no_sleep: list[float]
    ) -> None:
        """A GET that failed once succeeds on the retry."""
        failures = [True]

        def flaky(request: httpx.Request) -> httpx.Response:
            if failures:
                failures.pop()
                raise httpx.ReadTimeout("slow", request=request)
            response: httpx.Response = fake_daemon(request)
            return response

        with sync(flaky, settings) as kdf:
            assert kdf.status().name == "main"


class TestRpc:
    def test_rpc_returns_kdf_answer(self, fake_daemon: Any, settings: ClientSettings) -> None:
        """rpc returns KDF's answer; a KDF error is data, not an exception."""
        fake_daemon.states["main"] = "running"
        with sync(fake_daemon, settings) as kdf:
            version = kdf.rpc("version")
            unknown = kdf.rpc("nope", {"userpass": "never-sent"})
        assert version.ok and version.result == "2.5.1-beta_kdfsim0"
        assert not unknown.ok and "No such method" in (unknown.error or "")
        assert b"userpass" not in fake_daemon.requests[-1].content

    def test_rpc_when_not_running_is_conflict(
        self, fake_daemon: Any, settings: ClientSettings
    ) -> None:
        """The daemon's 409 on the rpc route raises Conflict."""
        with sync(fake_daemon, settings) as kdf, pytest.raises(errors.Conflict):
            kdf.rpc("version")


class TestStreams:
    def test_logs_tail_and_follow(self, fake_daemon: Any, settings: ClientSettings) -> None:
        """logs() reads the tail, and with follow the SSE `log` events."""
        with sync(fake_daemon, settings) as kdf:
            assert [x.line for x in kdf.logs(tail=1)] == ["line two"]
            assert [x.line for x in kdf.logs(follow=True)] == ["line one", "line two"]

    def test_monitor_health_survives_restart(
        self,
        fake_daemon: Any,
        settings: ClientSettings,
        sse_health: Callable[..., bytes],
        no_sleep: list[float],
    ) -> None:
        """The health stream reconnects after the daemon goes away, resuming with Last-Event-ID."""
        fake_daemon.health_streams = [[sse_health(1), sse_health(2)], [sse_health(3)]]
        events = []
        with sync(fake_daemon, settings) as kdf:
            for event in kdf.monitor_health(backoff=Backoff(initial=0.25)):
                events.append(event)
                if len(events) == 5:
                    break
        assert [e.kind for e in events] == [
            "sample",
            "sample",
            "reconnecting",
            "reconnected",
            "sample",
        ]
        watch = [r for r in fake_daemon.requests if r.url.params.get("watch") == "true"]
        assert watch[1].headers["Last-Event-ID"] == "2"
        assert no_sleep[0] == 0.25

    def test_monitor_health_raises_auth_errors(
        self, fake_daemon: Any, no_sleep: list[float]
    ) -> None:
        """A refused key ends the stream at once instead of reconnecting forever."""
        bad = ClientSettings("http://127.0.0.1:8000", api_key="kdfr_wrong")
        with sync(fake_daemon, bad) as kdf, pytest.raises(errors.Unauthorized):
            next(iter(kdf.monitor_health()))


class TestAsyncTwin:
    async def test_same_calls_same_results(
        self, fake_daemon: Any, settings: ClientSettings
    ) -> None:
        """The async twin offers the same calls with the same results."""
        async with AsyncRemoteKdfController(
            settings, transport=httpx.MockTransport(fake_daemon)
        ) as kdf:
            status = await kdf.start_default()
            assert status.state == "running"
            assert (await kdf.rpc("version")).result == "2.5.1-beta_kdfsim0"
            assert [x.line async for x in kdf.logs(follow=True)] == ["line one", "line two"]
            with pytest.raises(errors.NotFound):
                await kdf.status("nope")

    async def test_async_health_reconnects(
        self, fake_daemon: Any, settings: ClientSettings, sse_health: Callable[..., bytes]
    ) -> None:
        """The async health stream reconnects too."""
        fake_daemon.health_streams = [[sse_health(1)], [sse_health(2)]]
        kinds = []
        async with AsyncRemoteKdfController(
            settings, transport=httpx.MockTransport(fake_daemon)
        ) as kdf:
            async for event in kdf.monitor_health(backoff=Backoff(initial=0.01)):
                kinds.append(event.kind)
                if len(kinds) == 4:
                    break
        assert kinds == ["sample", "reconnecting", "reconnected", "sample"]
