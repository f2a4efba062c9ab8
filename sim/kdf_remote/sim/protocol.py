"""KDF's RPC request pipeline and its legacy and v2 (``mmrpc: "2.0"``) shapes (kdf-facts 2).

Pure functions of (node, HTTP method, body, peer): no I/O besides the request log and the
``log`` lines KDF writes, so the whole protocol is testable without sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from kdf_remote.sim.node import Node, is_loopback

__all__ = [
    "PUBLIC_METHODS",
    "HandlerPanicError",
    "LegacyError",
    "LegacyHandler",
    "MmRpcError",
    "Reply",
    "V2Handler",
    "handle_body",
    "legacy_error_text",
]

PUBLIC_METHODS: frozenset[str | None] = frozenset(
    {
        "fundvalue",
        "getprice",
        "getpeers",
        "getcoins",
        "help",
        "metrics",
        "notify",
        "orderbook",
        "passphrase",
        "pricearray",
        "psock",
        "statsdisp",
        "stats_swap_status",
        "tradesarray",
        "ticker",
        "version",
        None,
    }
)
_V2_FIELDS = ("mmrpc", "userpass", "method", "params", "id")
_V2_FIELDS_TEXT = ", ".join(f"`{name}`" for name in _V2_FIELDS)
_ABORTED = "The RPC service aborted without responding."
# Location prefixes are illustrative: KDF's `ERR!` adds `<module>:<line>]` at each level.
_RPC_LINE = 178

_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass(slots=True)
class Reply:
    """One HTTP answer: status, JSON payload and whether KDF sets ``Content-Type`` on it."""

    status: int
    payload: object
    json_content_type: bool = False


class LegacyError(Exception):
    """A legacy handler failure: HTTP 500 ``{"error": "<location>] <message>"}``."""


class HandlerPanicError(Exception):
    """A handler that panics in KDF (caught by ``catch_unwind``: HTTP 500, no answer)."""


class MmRpcError(Exception):
    """A v2 error: KDF's ``MmError`` serialisation with its HTTP status."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        error_data: object = None,
        path: str = "dispatcher",
        line: int = 122,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.error_data = error_data
        self.path = path
        self.line = line

    def body(self, request_id: int | None) -> dict[str, object]:
        """The v2 error object, ``error_data`` left out for unit variants."""
        module = self.path.rsplit(".", 1)[-1]
        out: dict[str, object] = {
            "mmrpc": "2.0",
            "error": self.message,
            "error_path": self.path,
            "error_trace": f"{module}:{self.line}]",
            "error_type": self.error_type,
        }
        if self.error_data is not None:
            out["error_data"] = self.error_data
        out["id"] = request_id
        return out


LegacyHandler = Callable[[Node, dict[str, object]], object]
V2Handler = Callable[[Node, object], object]


def legacy_error_text(message: str, where: str = "dispatcher_legacy:141") -> str:
    """A legacy error string with KDF's ``ERR!`` location prefixes."""
    return f"rpc:{_RPC_LINE}] {where}] {message}"


def _legacy_reply(message: str, where: str = "dispatcher_legacy:141") -> Reply:
    return Reply(500, {"error": legacy_error_text(message, where)})


def _serde_message(body: bytes, err: msgspec.DecodeError) -> str:
    """A serde_json-style message (``... at line L column C``) for a body that is not JSON."""
    text = str(err)
    offset = len(body)
    marker = "(byte "
    if marker in text:
        digits = text.split(marker, 1)[1].split(")", 1)[0]
        if digits.isdigit():
            offset = int(digits)
    before = body[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1)
    if "truncated" in text or not body.strip():
        return f"EOF while parsing a value at line {line} column {column}"
    return f"expected value at line {line} column {column + 1}"


def handle_body(
    node: Node,
    legacy: dict[str, LegacyHandler],
    v2: dict[str, V2Handler],
    http_method: str,
    body: bytes,
    *,
    peer: tuple[str, int],
    on_request: Callable[[object, tuple[str, int]], None] | None = None,
) -> Reply:
    """KDF's ``rpc_service``: parse JSON first, then insist on POST, then dispatch (batch aware)."""
    try:
        value = _decode(body)
    except msgspec.DecodeError as err:
        return Reply(500, {"error": _serde_message(body, err)})
    if http_method != "POST":
        return Reply(
            500, {"error": legacy_error_text("Only POST requests are supported!", "rpc:195")}
        )
    pipeline = _Pipeline(node, legacy, v2, peer, on_request)
    if isinstance(value, list):
        return Reply(200, [pipeline.single(item).payload for item in value], True)
    return pipeline.single(value)


class _Pipeline:
    """One request's dispatch context (so the batch loop does not re-pass five arguments)."""

    __slots__ = ("legacy", "node", "on_request", "peer", "v2")

    def __init__(
        self,
        node: Node,
        legacy: dict[str, LegacyHandler],
        v2: dict[str, V2Handler],
        peer: tuple[str, int],
        on_request: Callable[[object, tuple[str, int]], None] | None,
    ) -> None:
        self.node = node
        self.legacy = legacy
        self.v2 = v2
        self.peer = peer
        self.on_request = on_request

    def single(self, request: object) -> Reply:
        if self.on_request is not None:
            self.on_request(request, self.peer)
        try:
            if isinstance(request, dict) and request.get("mmrpc") is not None:
                return self._v2(request)
            reply = self._legacy(request)
            if reply is not None:
                return reply
            method = request.get("method") if isinstance(request, dict) else None
            self.node.log.env(
                "WARN",
                "mm2_main::rpc:213",
                f"Couldn't resolve '{method}' RPC using the legacy API, "
                "trying v2 (mmrpc: 2.0) instead.",
            )
            rerouted = {**request, "mmrpc": "2.0"} if isinstance(request, dict) else request
            return self._v2(rerouted)
        except HandlerPanicError:
            return Reply(500, {"error": _ABORTED})

    def _legacy(self, request: object) -> Reply | None:
        """The legacy dispatcher; None means no legacy method matched (v2.5 reroutes to v2)."""
        fields = request if isinstance(request, dict) else {}
        method = fields.get("method")
        name = method if isinstance(method, str) else None
        ip = self.peer[0]
        limiter = self.node.limiter
        if limiter.is_banned(ip):
            return _legacy_reply("Your ip is banned.")
        public = name in PUBLIC_METHODS
        config = self.node.config
        if config.rpc_local_only and not public and not is_loopback(ip):
            return _legacy_reply(
                "Selected method is not allowed: Selected method can only be called from localhost."
            )
        if not public:
            userpass = fields.get("userpass")
            if not isinstance(userpass, str):
                return _legacy_reply("Userpass is not set!")
            if config.rpc_password is None or userpass != config.rpc_password:
                left = limiter.record_failure(ip)
                return _legacy_reply(f"Userpass is invalid! - Rate Limit attempts left: {left}")
        handler = self.legacy.get(name) if name is not None else None
        if handler is None:
            return None
        try:
            return Reply(200, handler(self.node, fields), True)
        except LegacyError as err:
            return _legacy_reply(str(err), "lp_commands:92")

    def _v2(self, request: object) -> Reply:
        request_id: int | None = None
        try:
            parsed = _parse_v2(request)
            request_id = parsed.id
            return Reply(
                200, {"mmrpc": "2.0", "result": self._dispatch_v2(parsed), "id": request_id}
            )
        except MmRpcError as err:
            return Reply(err.status, err.body(request_id))

    def _dispatch_v2(self, request: _V2Request) -> object:
        ip = self.peer[0]
        node = self.node
        config = node.config
        if node.limiter.is_banned(ip):
            raise MmRpcError(403, "Banned", "Your ip is banned.")
        public = request.method in PUBLIC_METHODS
        if config.rpc_local_only and not public and not is_loopback(ip):
            raise MmRpcError(
                403, "LocalHostOnly", "Selected method can be called from localhost only!"
            )
        if not public:
            if request.userpass is None:
                raise MmRpcError(403, "UserpassIsNotSet", "Userpass is not set!")
            expected = config.rpc_password
            if expected is None:
                node.log.env(
                    "WARN",
                    "mm2_main::rpc::dispatcher:95",
                    "'rpc_password' is not set in the config",
                )
                expected = ""
            if request.userpass != expected:
                left = node.limiter.record_failure(ip)
                raise MmRpcError(
                    403,
                    "UserpassIsInvalid",
                    f"Userpass is invalid! - Rate Limit attempts left: {left}",
                    error_data={"error_type": "NbAttemptsLeft", "error_data": left},
                )
        handler = self.v2.get(request.method)
        if handler is None:
            raise MmRpcError(400, "NoSuchMethod", "No such method")
        return handler(node, request.params)


@dataclass(frozen=True, slots=True)
class _V2Request:
    method: str
    userpass: str | None
    params: object
    id: int | None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {_encode(value).decode()}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _invalid(message: str) -> MmRpcError:
    return MmRpcError(400, "InvalidRequest", f"Error parsing request: {message}")


def _parse_v2(request: object) -> _V2Request:
    """Deserialise ``MmRpcRequest`` as serde would, unknown fields rejected."""
    if not isinstance(request, dict):
        raise _invalid(f"invalid type: {_type_name(request)}, expected struct MmRpcRequest")
    for key in request:
        if key not in _V2_FIELDS:
            raise _invalid(f"unknown field `{key}`, expected one of {_V2_FIELDS_TEXT}")
    mmrpc = request.get("mmrpc")
    if mmrpc is None:
        raise _invalid("missing field `mmrpc`")
    if not isinstance(mmrpc, str):
        raise _invalid(f"invalid type: {_type_name(mmrpc)}, expected a string")
    if mmrpc != "2.0":
        raise MmRpcError(
            400,
            "InvalidMmRpcVersion",
            f'Error parsing mmrpc version: Expected "2.0", found "{mmrpc}"',
            path="mm_protocol",
            line=41,
        )
    method = request.get("method")
    if method is None:
        raise _invalid("missing field `method`")
    if not isinstance(method, str):
        raise _invalid(f"invalid type: {_type_name(method)}, expected a string")
    userpass = request.get("userpass")
    if userpass is not None and not isinstance(userpass, str):
        raise _invalid(f"invalid type: {_type_name(userpass)}, expected a string")
    raw_id = request.get("id")
    if raw_id is not None and (
        not isinstance(raw_id, int) or isinstance(raw_id, bool) or not 0 <= raw_id < 2**64
    ):
        raise _invalid(f"invalid type: {_type_name(raw_id)}, expected usize")
    return _V2Request(method, userpass, request.get("params"), raw_id)
