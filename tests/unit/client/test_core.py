"""The client's I/O-free core: SSE parsing, error mapping, retry and reconnection decisions."""

from __future__ import annotations

import msgspec
import pytest

from kdf_remote.client import errors
from kdf_remote.client._core import (
    Backoff,
    Calls,
    HealthStreamState,
    RetryPolicy,
    SseEvent,
    SseParser,
    api_error,
    decode_log_line,
    decode_log_tail,
    interpret,
    retry_after_seconds,
    rpc_body,
    rpc_v2_body,
)

pytestmark = pytest.mark.unit


class TestSseParser:
    def test_events_split_across_chunks_and_line_endings(self) -> None:
        """Events are assembled across arbitrary chunk boundaries with LF, CRLF and CR endings."""
        parser = SseParser()
        stream = 'event: health\r\nid: 7\r\ndata: {"a":\r\n\r\ndata: x\rdata: y\r\r: comment\n\n'
        events = [e for i in range(len(stream)) for e in parser.feed(stream[i])]
        assert events == [
            SseEvent(event="health", data='{"a":', id="7", retry_ms=None),
            SseEvent(event="message", data="x\ny", id="7", retry_ms=None),
        ]
        assert parser.last_event_id == "7"

    def test_retry_field_and_event_without_data(self) -> None:
        """`retry` is reported with its event; a block with no data dispatches nothing."""
        parser = SseParser()
        assert list(parser.feed("event: end\n\n")) == []
        (event,) = parser.feed("retry: 1500\ndata: z\n\n")
        assert event.retry_ms == 1500
        assert event.event == "message"

    def test_trailing_cr_waits_for_next_chunk(self) -> None:
        """A CR at the end of a chunk may be half of CRLF, so it does not end a blank line yet."""
        parser = SseParser()
        assert list(parser.feed("data: a\r")) == []
        (event,) = parser.feed("\n\r\n")
        assert event.data == "a"


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (400, errors.BadRequest),
            (401, errors.Unauthorized),
            (403, errors.Forbidden),
            (404, errors.NotFound),
            (409, errors.Conflict),
            (413, errors.PayloadTooLarge),
            (429, errors.RateLimited),
            (502, errors.KdfUnavailable),
            (503, errors.KdfUnavailable),
            (500, errors.ServerError),
            (418, errors.BadRequest),
        ],
    )
    def test_status_to_class(self, status: int, cls: type[errors.ApiError]) -> None:
        """Each documented HTTP status maps to its exception, carrying code and detail."""
        exc = api_error(status, b'{"error": "some_code", "detail": "what happened"}', None)
        assert type(exc) is cls
        assert (exc.status, exc.code, exc.detail) == (status, "some_code", "what happened")

    def test_rate_limited_carries_retry_after(self) -> None:
        """429 exposes the Retry-After hint in seconds."""
        exc = api_error(429, b'{"error": "rate_limited", "detail": "slow down"}', "7")
        assert isinstance(exc, errors.RateLimited)
        assert exc.retry_after == 7.0

    def test_non_json_error_body(self) -> None:
        """A body that is not the error document still gives a typed error with its text."""
        exc = api_error(502, b"Bad Gateway", None)
        assert isinstance(exc, errors.KdfUnavailable)
        assert exc.code == "http_502"
        assert exc.detail == "Bad Gateway"

    def test_retry_after_http_date_in_the_past_is_zero(self) -> None:
        """An HTTP-date Retry-After in the past means retry now; garbage means no hint."""
        assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
        assert retry_after_seconds("soon") is None
        assert retry_after_seconds(None) is None

    def test_auth_family(self) -> None:
        """Transport errors, 401 and 403 are 'cannot reach or authenticate'; 404 is not."""
        assert errors.is_auth_failure(errors.ConnectError("x"))
        assert errors.is_auth_failure(errors.Unauthorized(401, "unauthorized", ""))
        assert errors.is_auth_failure(errors.Forbidden(403, "forbidden", ""))
        assert not errors.is_auth_failure(errors.NotFound(404, "not_found", ""))


class TestInterpret:
    def test_decodes_typed_status(self) -> None:
        """A 2xx body is decoded into the typed result."""
        body = msgspec.json.encode(
            {
                "name": "main",
                "state": "running",
                "pid": 12,
                "rpc_port": 7783,
                "data_dir": "/d",
                "last_exit": {"code": 0, "at": "2025-01-01T00:00:00Z", "reason": "stopped"},
                "limits": {"memory_bytes": 1024},
                "extra_field_from_newer_daemon": 1,
            }
        )
        status = interpret(Calls.status("main"), 200, body, None)
        assert status.state == "running"
        assert status.pid == 12
        assert status.last_exit is not None and status.last_exit.reason == "stopped"
        assert status.limits is not None and status.limits.memory_bytes == 1024

    def test_wrong_shape_is_protocol_error(self) -> None:
        """A 2xx answer of the wrong shape is a ProtocolError, never a silent dict."""
        with pytest.raises(errors.ProtocolError):
            interpret(Calls.status("main"), 200, b'{"state": 3}', None)

    def test_rpc_passes_kdf_errors_through(self) -> None:
        """A KDF error answer (500 legacy error) is KDF's reply, not a daemon error."""
        reply = interpret(
            Calls.rpc("main", b"{}"), 500, b'{"error": "rpc:1] No such method"}', None
        )
        assert reply.http_status == 500
        assert not reply.ok
        assert reply.error == "rpc:1] No such method"

    def test_rpc_daemon_error_document_raises(self) -> None:
        """The daemon's own error document on the rpc route raises (here 502: KDF down)."""
        with pytest.raises(errors.KdfUnavailable):
            interpret(
                Calls.rpc("main", b"{}"),
                502,
                b'{"error": "kdf_unreachable", "detail": "KDF did not answer"}',
                None,
            )

    def test_log_tail_shapes(self) -> None:
        """The tail decoder reads the daemon's {"name","lines"} and bare lists."""
        lines = decode_log_tail(200, b'{"name": "main", "lines": [{"line": "a"}, {"line": "b"}]}')
        assert [x.line for x in lines] == ["a", "b"]
        assert [x.line for x in decode_log_tail(200, b'["x"]')] == ["x"]
        assert decode_log_line('{"line": "hi", "stream": "stderr"}').stream == "stderr"
        assert decode_log_line("plain text").line == "plain text"

    def test_instance_name_rejects_slash(self) -> None:
        """A name that would change the URL path is refused before sending."""
        with pytest.raises(errors.BadRequest):
            Calls.status("../health")


class TestRpcBodies:
    def test_legacy_body_drops_caller_userpass(self) -> None:
        """The client never forwards a userpass: the daemon adds the real one."""
        body = msgspec.json.decode(rpc_body("my_balance", {"coin": "KMD", "userpass": "x"}))
        assert body == {"coin": "KMD", "method": "my_balance"}

    def test_v2_body(self) -> None:
        """v2 requests carry mmrpc 2.0, params only when given, and the id."""
        assert msgspec.json.decode(rpc_v2_body("get_enabled_coins")) == {
            "mmrpc": "2.0",
            "method": "get_enabled_coins",
        }
        assert msgspec.json.decode(rpc_v2_body("m", {"a": 1}, request_id=3)) == {
            "mmrpc": "2.0",
            "method": "m",
            "params": {"a": 1},
            "id": 3,
        }


class TestRetryPolicy:
    def test_connect_errors_retry_even_for_posts(self) -> None:
        """A connection that never opened is safe to retry for any call, bounded."""
        policy = RetryPolicy(attempts=3, jitter=False)
        call = Calls.stop("main")
        exc = errors.ConnectError("refused")
        assert policy.should_retry(call, 1, exc) == pytest.approx(0.2)
        assert policy.should_retry(call, 2, exc) == pytest.approx(0.4)
        assert policy.should_retry(call, 3, exc) is None

    def test_read_failures_retry_only_idempotent_calls(self) -> None:
        """A broken exchange may have reached the daemon: only idempotent calls are repeated."""
        policy = RetryPolicy(jitter=False)
        broken = errors.TransportError("reset")
        assert policy.should_retry(Calls.status("main"), 1, broken) is not None
        assert policy.should_retry(Calls.start("main", None), 1, broken) is None
        assert (
            policy.should_retry(Calls.rpc("main", b"{}"), 1, errors.DaemonTimeoutError("t")) is None
        )

    def test_rate_limit_uses_hint_within_cap(self) -> None:
        """429 waits Retry-After when it is short, and gives up when it exceeds the cap."""
        policy = RetryPolicy(jitter=False, cap=2.0)
        short = errors.RateLimited(429, "rate_limited", "", 1.5)
        long = errors.RateLimited(429, "rate_limited", "", 30.0)
        assert policy.should_retry(Calls.instances(), 1, short) == 1.5
        assert policy.should_retry(Calls.instances(), 1, long) is None

    def test_api_errors_are_not_retried(self) -> None:
        """Client errors are answers, not glitches."""
        policy = RetryPolicy()
        assert (
            policy.should_retry(Calls.status("x"), 1, errors.NotFound(404, "not_found", "")) is None
        )
        assert (
            RetryPolicy.none().should_retry(Calls.status("x"), 1, errors.ConnectError("x")) is None
        )


class TestHealthStreamState:
    def test_reconnect_cycle(self) -> None:
        """An interruption yields `reconnecting` with growing waits; then `reconnected`."""
        state = HealthStreamState(backoff=Backoff(initial=0.5, cap=2.0))
        data = (
            '{"name":"main","state":"running","healthy":true,"rpc_ok":true,'
            '"at":"2025-01-01T00:00:00Z"}'
        )
        sample = SseEvent(event="health", data=data, id="4", retry_ms=None)
        items = state.on_event(sample)
        assert [i.kind for i in items] == ["sample"]
        assert state.last_event_id == "4"
        first = state.on_interrupt("gone", now=100.0)
        second = state.on_interrupt("gone", now=101.0)
        assert first[0].kind == "reconnecting"
        assert (first[1], second[1]) == (0.5, 1.0)
        items = state.on_event(sample)
        assert [i.kind for i in items] == ["reconnected", "sample"]
        assert state.on_interrupt("gone", now=200.0)[1] == 0.5

    def test_gives_up_after_limit(self) -> None:
        """With give_up_after, a stream down too long raises TransportError."""
        state = HealthStreamState(give_up_after=5.0)
        state.on_interrupt("gone", now=0.0)
        state.on_interrupt("gone", now=4.0)
        with pytest.raises(errors.TransportError):
            state.on_interrupt("gone", now=6.0)

    def test_ignores_other_events(self) -> None:
        """`end` and `state` events are not samples."""
        state = HealthStreamState()
        assert (
            state.on_event(SseEvent(event="end", data='{"reason":"x"}', id=None, retry_ms=None))
            == []
        )
