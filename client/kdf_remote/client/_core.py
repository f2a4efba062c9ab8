"""The I/O-free half of the client: what to send, how to read the answer, when to retry.

The sync and async controllers (`_sync.py`, `_async.py`) only move bytes; every decision lives
here so that it is written once and unit-tested without a network.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from kdf_remote.client import errors
from kdf_remote.client.models import (
    Backup,
    BackupList,
    Capacity,
    DaemonHealth,
    HealthEvent,
    HealthSample,
    InstanceList,
    InstanceStatus,
    LogLine,
    RestoreResult,
    RpcReply,
    UpdateRequest,
    UpdateResult,
    Worker,
    WorkerList,
    WorkerRemoved,
    WorkerRequest,
)

T = TypeVar("T")

API_PREFIX = "/v1"
#: Startup config sent by `start` when the caller gives none and the daemon stores none; the
#: daemon generates the rpc_password (secrets never travel from the CLI by default).
DEFAULT_STARTUP_CONFIG: dict[str, Any] = {
    "gui": "kdf-remote",
    "netid": 8762,
    "disable_p2p": True,
    # KDF refuses to start without a coins list (argument, MM_COINS_PATH or ~/.kdf/coins).
    "coins": [],
}


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One REST call: request parts plus how to decode a 2xx answer."""

    method: str
    path: str
    decode: Callable[[int, bytes], T]
    params: Mapping[str, str] | None = None
    content: bytes | None = None
    idempotent: bool = True
    raw_errors: bool = False
    """For `rpc`: only daemon error documents are errors; any other answer is KDF's reply."""

    @property
    def headers(self) -> dict[str, str]:
        """Request headers the call needs beyond auth."""
        headers = {"Accept": "application/json"}
        if self.content is not None:
            headers["Content-Type"] = "application/json"
        return headers


# --- decoding -----------------------------------------------------------------------------------


def _decoder(kind: type[T]) -> Callable[[int, bytes], T]:
    def decode(_status: int, body: bytes) -> T:
        try:
            return msgspec.json.decode(body, type=kind)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise errors.ProtocolError(
                f"unexpected answer from the daemon ({kind.__name__}): {exc}"
            ) from None

    return decode


def _decode_instance_list(_status: int, body: bytes) -> list[InstanceStatus]:
    """Accept both `{"instances": [...]}` and a bare list."""
    try:
        raw = msgspec.json.decode(body)
        if isinstance(raw, list):
            return msgspec.convert(raw, list[InstanceStatus])
        return msgspec.convert(raw, InstanceList).instances
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise errors.ProtocolError(
            f"unexpected answer from the daemon (instances): {exc}"
        ) from None


def _decode_list(kind: type[Any], wrapper: type[Any], member: str) -> Callable[[int, bytes], Any]:
    def decode(_status: int, body: bytes) -> Any:
        try:
            raw = msgspec.json.decode(body)
            if isinstance(raw, list):
                return msgspec.convert(raw, list[kind])  # type: ignore[valid-type]
            return getattr(msgspec.convert(raw, wrapper), member)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise errors.ProtocolError(
                f"unexpected answer from the daemon ({member}): {exc}"
            ) from None

    return decode


def _decode_nothing(_status: int, _body: bytes) -> None:
    return None


def _decode_rpc(status: int, body: bytes) -> RpcReply:
    try:
        return RpcReply(http_status=status, body=msgspec.json.decode(body) if body else None)
    except msgspec.DecodeError:
        return RpcReply(http_status=status, body=body.decode("utf-8", "replace"))


def decode_log_line(data: str) -> LogLine:
    """One SSE `data` payload of a log stream: a JSON `LogLine` or a bare text line."""
    if data.startswith("{"):
        try:
            return msgspec.json.decode(data, type=LogLine)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    return LogLine(line=data)


def decode_health_sample(data: str) -> HealthSample:
    """One SSE `data` payload of a health stream."""
    try:
        return msgspec.json.decode(data, type=HealthSample)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise errors.ProtocolError(f"unexpected health event from the daemon: {exc}") from None


def decode_log_tail(status: int, body: bytes) -> list[LogLine]:
    """`GET /logs?tail=N` without follow: `{"lines": [...]}`, a list, or plain text."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return [LogLine(line=line) for line in body.decode("utf-8", "replace").splitlines()]
    items = raw.get("lines", []) if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise errors.ProtocolError("unexpected answer from the daemon (logs)")
    lines: list[LogLine] = []
    for item in items:
        if isinstance(item, str):
            lines.append(LogLine(line=item))
        else:
            try:
                lines.append(msgspec.convert(item, LogLine))
            except msgspec.ValidationError as exc:
                raise errors.ProtocolError(f"unexpected log line from the daemon: {exc}") from None
    return lines


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a `Retry-After` header: delta-seconds or an HTTP date (relative to its own Date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def api_error(status: int, body: bytes, retry_after: str | None) -> errors.ApiError:
    """Turn a non-2xx daemon answer into the matching `ApiError`."""
    code, detail = f"http_{status}", ""
    try:
        doc = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        doc = None
    if isinstance(doc, dict):
        code = str(doc.get("error") or code)
        detail = str(doc.get("detail") or "")
    elif body:
        detail = body[:200].decode("utf-8", "replace")
    return errors.error_for_status(
        status, code, detail, retry_after=retry_after_seconds(retry_after)
    )


def is_daemon_error_document(body: bytes) -> bool:
    """True when a body is the daemon's own error shape rather than KDF's answer."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return isinstance(doc, dict) and "error" in doc and "detail" in doc


def interpret(call: Call[T], status: int, body: bytes, retry_after: str | None) -> T:
    """Decode a 2xx answer, or raise the error the answer means."""
    if call.raw_errors and not (
        status in (401, 403, 404, 413, 429) or is_daemon_error_document(body)
    ):
        return call.decode(status, body)
    if 200 <= status < 300:
        return call.decode(status, body)
    raise api_error(status, body, retry_after)


# --- retries ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    Defaults: 3 attempts in all, first wait 0.2 s, doubling, capped at 2 s. Connection failures
    (the request never reached the daemon) are retried for every call; timeouts, broken reads,
    429 and 503 only for idempotent calls. `RetryPolicy.none()` disables retries (tests).
    """

    attempts: int = 3
    initial: float = 0.2
    cap: float = 2.0
    jitter: bool = True

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(attempts=1)

    def delay(self, attempt: int) -> float:
        """Wait before retry number `attempt` (1-based)."""
        ceiling = min(self.cap, self.initial * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling) if self.jitter else ceiling  # noqa: S311  # jitter, not crypto

    def should_retry(self, call: Call[Any], attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before retrying after `exc`, or None to give up."""
        if attempt >= self.attempts:
            return None
        if isinstance(exc, errors.ConnectError):
            return self.delay(attempt)
        if not call.idempotent:
            return None
        if isinstance(exc, errors.RateLimited):
            wait = exc.retry_after if exc.retry_after is not None else self.delay(attempt)
            return wait if wait <= self.cap else None
        if isinstance(exc, errors.KdfUnavailable) and exc.status == 503:
            return self.delay(attempt)
        if isinstance(exc, errors.DaemonTimeoutError | errors.TransportError) and not isinstance(
            exc, errors.ProtocolError
        ):
            return self.delay(attempt)
        return None


@dataclass(slots=True)
class Backoff:
    """Reconnection delays for long-lived streams: exponential, capped, reset on success."""

    initial: float = 0.5
    cap: float = 10.0
    floor: float = 0.0
    _next: float = field(default=0.0, init=False)

    def reset(self) -> None:
        """The stream delivered data again: start over from `initial`."""
        self._next = 0.0

    def next_delay(self) -> float:
        """The wait before the next reconnection attempt."""
        self._next = self.initial if self._next == 0.0 else min(self.cap, self._next * 2)
        return max(self.floor, self._next)


# --- Server-Sent Events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched Server-Sent Event."""

    event: str
    data: str
    id: str | None
    retry_ms: int | None


@dataclass(slots=True)
class SseParser:
    """Incremental parser of a `text/event-stream` (WHATWG HTML, "server-sent events")."""

    _buffer: str = ""
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _retry: int | None = None
    last_event_id: str | None = None

    def feed(self, chunk: str) -> Iterator[SseEvent]:
        """Feed decoded text; yield every event completed by it."""
        self._buffer += chunk
        while True:
            line, sep, rest = _split_line(self._buffer)
            if not sep:
                return
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data:
            self._event, self._id, self._retry = "", None, None
            return None
        event = SseEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self.last_event_id,
            retry_ms=self._retry,
        )
        self._event, self._data, self._id, self._retry = "", [], None, None
        return event


def _split_line(buffer: str) -> tuple[str, str, str]:
    """Split off the first line ending in CRLF, LF or CR (a lone trailing CR waits for more)."""
    for index, char in enumerate(buffer):
        if char == "\n":
            return buffer[:index], "\n", buffer[index + 1 :]
        if char == "\r":
            if index + 1 == len(buffer):
                return buffer, "", ""
            skip = 2 if buffer[index + 1] == "\n" else 1
            return buffer[:index], "\r", buffer[index + skip :]
    return buffer, "", ""


@dataclass(slots=True)
class HealthStreamState:
    """Resumption bookkeeping of `monitor_health`: last event id, backoff, interruption time.

    The twins feed it events and interruptions; it says what to yield and how long to wait.
    """

    backoff: Backoff = field(default_factory=Backoff)
    give_up_after: float | None = None
    last_event_id: str | None = None
    interrupted_at: float | None = None

    def on_event(self, event: SseEvent) -> list[HealthEvent]:
        """Items to yield for one SSE event (a sample, preceded by `reconnected` after a gap)."""
        out: list[HealthEvent] = []
        if self.interrupted_at is not None:
            out.append(HealthEvent(kind="reconnected"))
            self.interrupted_at = None
        self.backoff.reset()
        if event.id:
            self.last_event_id = event.id
        if event.retry_ms is not None:
            self.backoff.floor = event.retry_ms / 1000
        if event.event in ("message", "health", "sample"):
            out.append(HealthEvent(kind="sample", sample=decode_health_sample(event.data)))
        return out

    def on_interrupt(self, detail: str, now: float) -> tuple[HealthEvent, float]:
        """The stream broke: the item to yield and the wait before reconnecting.

        Raises `TransportError` once the stream has been down longer than `give_up_after`.
        """
        if self.interrupted_at is None:
            self.interrupted_at = now
        elif self.give_up_after is not None and now - self.interrupted_at > self.give_up_after:
            raise errors.TransportError(
                f"health stream down for {now - self.interrupted_at:.0f} s, giving up: {detail}"
            )
        return HealthEvent(kind="reconnecting", detail=detail), self.backoff.next_delay()


def is_stream_interruption(exc: BaseException) -> bool:
    """Errors after which a watch stream reconnects (the daemon went away or is restarting)."""
    return isinstance(exc, errors.TransportError | errors.KdfUnavailable | errors.ServerError)


# --- the calls ----------------------------------------------------------------------------------


def _instance(name: str) -> str:
    if not name or "/" in name:
        raise errors.BadRequest(400, "bad_instance", f"not an instance name: {name!r}")
    return f"{API_PREFIX}/instances/{quote(name, safe='')}"


def encode_config(config: object) -> bytes:
    """JSON bytes of a startup config given as a mapping or a msgspec Struct."""
    if isinstance(config, bytes | bytearray):
        return bytes(config)
    try:
        return msgspec.json.encode(config)
    except TypeError as exc:
        raise errors.BadRequest(400, "bad_config", f"startup config is not JSON: {exc}") from None


class Calls:
    """Builders for every REST call of design.md; pure functions of their arguments."""

    @staticmethod
    def health() -> Call[DaemonHealth]:
        """`GET /v1/health`."""
        return Call("GET", f"{API_PREFIX}/health", _decoder(DaemonHealth))

    @staticmethod
    def instances() -> Call[list[InstanceStatus]]:
        """`GET /v1/instances`."""
        return Call("GET", f"{API_PREFIX}/instances", _decode_instance_list)

    @staticmethod
    def status(name: str) -> Call[InstanceStatus]:
        """`GET /v1/instances/{name}`."""
        return Call("GET", _instance(name), _decoder(InstanceStatus))

    @staticmethod
    def start(name: str, config: object | None) -> Call[InstanceStatus]:
        """`POST /v1/instances/{name}/start` (empty body: the stored config)."""
        content = None if config is None else encode_config(config)
        return Call(
            "POST",
            f"{_instance(name)}/start",
            _decoder(InstanceStatus),
            content=content,
            idempotent=False,
        )

    @staticmethod
    def stop(name: str) -> Call[InstanceStatus]:
        """`POST /v1/instances/{name}/stop`."""
        return Call("POST", f"{_instance(name)}/stop", _decoder(InstanceStatus), idempotent=False)

    @staticmethod
    def restart(name: str, config: object | None) -> Call[InstanceStatus]:
        """`POST /v1/instances/{name}/restart`."""
        content = None if config is None else encode_config(config)
        return Call(
            "POST",
            f"{_instance(name)}/restart",
            _decoder(InstanceStatus),
            content=content,
            idempotent=False,
        )

    @staticmethod
    def update_config(name: str, config: object) -> Call[None]:
        """`PUT /v1/instances/{name}/config` (a replace: safe to repeat)."""
        return Call(
            "PUT", f"{_instance(name)}/config", _decode_nothing, content=encode_config(config)
        )

    @staticmethod
    def logs(name: str, tail: int) -> Call[list[LogLine]]:
        """`GET /v1/instances/{name}/logs?tail=N`."""
        return Call("GET", f"{_instance(name)}/logs", decode_log_tail, params={"tail": str(tail)})

    @staticmethod
    def logs_follow(name: str, tail: int) -> Call[None]:
        """`GET /v1/instances/{name}/logs?tail=N&follow=true` (an SSE stream)."""
        return Call(
            "GET",
            f"{_instance(name)}/logs",
            _decode_nothing,
            params={"tail": str(tail), "follow": "true"},
        )

    @staticmethod
    def health_of(name: str) -> Call[HealthSample]:
        """`GET /v1/instances/{name}/health`."""
        return Call("GET", f"{_instance(name)}/health", _decoder(HealthSample))

    @staticmethod
    def health_watch(name: str) -> Call[None]:
        """`GET /v1/instances/{name}/health?watch=true` (an SSE stream)."""
        return Call("GET", f"{_instance(name)}/health", _decode_nothing, params={"watch": "true"})

    @staticmethod
    def rpc(name: str, body: bytes) -> Call[RpcReply]:
        """`POST /v1/instances/{name}/rpc`: KDF's answer comes back whatever its status."""
        return Call(
            "POST",
            f"{_instance(name)}/rpc",
            _decode_rpc,
            content=body,
            idempotent=False,
            raw_errors=True,
        )

    @staticmethod
    def workers() -> Call[list[Worker]]:
        """`GET /v1/workers`."""
        return Call("GET", f"{API_PREFIX}/workers", _decode_list(Worker, WorkerList, "workers"))

    @staticmethod
    def add_worker(request: WorkerRequest) -> Call[Worker]:
        """`POST /v1/workers`."""
        return Call(
            "POST",
            f"{API_PREFIX}/workers",
            _decoder(Worker),
            content=msgspec.json.encode(request),
            idempotent=False,
        )

    @staticmethod
    def remove_worker(name: str, *, purge: bool = False) -> Call[WorkerRemoved]:
        """`DELETE /v1/workers/{name}` (`?purge=true` also deletes its data)."""
        if not name or "/" in name:
            raise errors.BadRequest(400, "bad_worker", f"not a worker name: {name!r}")
        return Call(
            "DELETE",
            f"{API_PREFIX}/workers/{quote(name, safe='')}",
            _decoder(WorkerRemoved),
            params={"purge": "true"} if purge else None,
        )

    @staticmethod
    def capacity() -> Call[Capacity]:
        """`GET /v1/capacity`."""
        return Call("GET", f"{API_PREFIX}/capacity", _decoder(Capacity))

    @staticmethod
    def update(request: UpdateRequest) -> Call[UpdateResult]:
        """`POST /v1/kdf/update`: answers 202 with the update's first progress."""
        return Call(
            "POST",
            f"{API_PREFIX}/kdf/update",
            _decoder(UpdateResult),
            content=msgspec.json.encode(request),
            idempotent=False,
        )

    @staticmethod
    def update_status() -> Call[UpdateResult]:
        """`GET /v1/kdf/update`: the running update, or the last one."""
        return Call("GET", f"{API_PREFIX}/kdf/update", _decoder(UpdateResult))

    @staticmethod
    def backups(name: str) -> Call[list[Backup]]:
        """`GET /v1/instances/{name}/backups`."""
        return Call(
            "GET", f"{_instance(name)}/backups", _decode_list(Backup, BackupList, "backups")
        )

    @staticmethod
    def create_backup(name: str) -> Call[Backup]:
        """`POST /v1/instances/{name}/backups`."""
        return Call("POST", f"{_instance(name)}/backups", _decoder(Backup), idempotent=False)

    @staticmethod
    def restore_backup(name: str, backup_id: str) -> Call[RestoreResult]:
        """`POST /v1/instances/{name}/backups/{id}/restore` (the instance must be stopped)."""
        return Call(
            "POST",
            f"{_instance(name)}/backups/{quote(backup_id, safe='')}/restore",
            _decoder(RestoreResult),
            idempotent=False,
        )


def rpc_body(method: str, params: Mapping[str, Any] | None) -> bytes:
    """A legacy (v1) KDF request: the method plus its params as top-level keys."""
    body: dict[str, Any] = dict(params or {})
    body.pop("userpass", None)
    body["method"] = method
    return msgspec.json.encode(body)


def rpc_v2_body(method: str, params: Any = None, *, request_id: int | None = None) -> bytes:
    """A v2 (`mmrpc: "2.0"`) KDF request; `params` omitted when None (unit-struct methods)."""
    body: dict[str, Any] = {"mmrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    if request_id is not None:
        body["id"] = request_id
    return msgspec.json.encode(body)
