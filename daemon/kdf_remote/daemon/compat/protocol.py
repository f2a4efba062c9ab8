"""KDF's RPC wire protocol as the ``kdf_compat`` listener speaks it (kdf-facts 2.1-2.4).

Pure functions, no I/O: read a request body into its calls (one object, or a batch array),
decide per call whether it may reach KDF, and build the answers KDF itself would give when it
may not. KDF's shapes, as an app built on the Komodo DeFi SDK parses them:

- legacy (no ``mmrpc``): errors are HTTP 500 ``{"error": "<location>] <message>"}``;
- v2 (``"mmrpc": "2.0"``): errors are ``{"mmrpc", "error", "error_path", "error_trace",
  "error_type", "error_data"?, "id"}`` with the dispatcher's status (403 for auth);
- batch (a JSON array): HTTP 200 with one element per call, each in its call's own shape.

Answers the daemon makes itself carry the location ``kdf_remote]`` (``error_path``
``kdf_remote`` in v2), so a developer can tell them from KDF's own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec

from kdf_remote.kdf.rpc import KEY_MATERIAL_METHODS, PUBLIC_METHODS

__all__ = [
    "DEFAULT_DENY_METHODS",
    "ORIGIN",
    "BatchMismatchError",
    "JsonBodyError",
    "Refusal",
    "Reply",
    "RpcCall",
    "RpcRequest",
    "batch_reply",
    "forwarded_batch",
    "judge",
    "legacy_error",
    "merge_batch",
    "parse_request",
    "refusal_reply",
    "v2_error",
]

ORIGIN: Final = "kdf_remote"
"""The location in the error messages the daemon writes itself."""
DEFAULT_DENY_METHODS: Final = KEY_MATERIAL_METHODS | {
    # A test-only method that makes a KDF stand-in panic.
    "sim_panic",
}
"""Methods never served through the listener; ``kdf_compat.deny_methods`` adds to these."""

_V2_VERSION: Final = "2.0"
_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class JsonBodyError(ValueError):
    """The body is not JSON; ``message`` is what KDF (serde_json) would say."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refusal(enum.Enum):
    """Why a call is answered by the daemon instead of KDF."""

    USERPASS_NOT_SET = "userpass not set"
    USERPASS_INVALID = "wrong userpass"
    METHOD_DENIED = "method denied"


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: status and JSON body."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class RpcCall:
    """What the listener needs to know about one call (never its params)."""

    method: str | None
    """None when missing or not a string (KDF treats that as public and rejects it itself)."""
    v2: bool
    """``mmrpc`` is present and not null: KDF routes it to the v2 dispatcher."""
    userpass: str | None
    """None when missing or not a string ("Userpass is not set!")."""
    request_id: int | None
    """The v2 ``id`` echoed in errors (a non-negative integer, else null)."""

    @property
    def public(self) -> bool:
        """KDF serves it without a userpass (``PUBLIC_METHODS``, or no method at all)."""
        return self.method is None or self.method in PUBLIC_METHODS


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """A parsed body: its calls, and whether it was a batch."""

    body: bytes
    calls: tuple[RpcCall, ...]
    batch: bool


def read_call(value: object) -> RpcCall:
    """The :class:`RpcCall` of one JSON value (a batch element may be anything)."""
    if not isinstance(value, dict):
        return RpcCall(method=None, v2=False, userpass=None, request_id=None)
    method = value.get("method")
    userpass = value.get("userpass")
    raw_id = value.get("id")
    v2 = value.get("mmrpc") is not None
    request_id = (
        raw_id
        if v2 and isinstance(raw_id, int) and not isinstance(raw_id, bool) and raw_id >= 0
        else None
    )
    return RpcCall(
        method=method if isinstance(method, str) else None,
        v2=v2,
        userpass=userpass if isinstance(userpass, str) else None,
        request_id=request_id,
    )


def parse_request(body: bytes) -> RpcRequest:
    """Read a request body as KDF does: JSON first, then one call or a batch of calls.

    Raises:
        JsonBodyError: the body is not JSON (KDF answers 500 with serde's message).
    """
    try:
        value = _any_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise JsonBodyError(serde_message(body, exc)) from None
    if isinstance(value, list):
        return RpcRequest(body=body, calls=tuple(read_call(item) for item in value), batch=True)
    return RpcRequest(body=body, calls=(read_call(value),), batch=False)


def serde_message(body: bytes, error: msgspec.DecodeError) -> str:
    """A serde_json-style message (``... at line L column C``) for a body that is not JSON."""
    text = str(error)
    offset = len(body)
    marker = "(byte "
    if marker in text:
        digits = text.split(marker, 1)[1].split(")", 1)[0]
        if digits.isdigit():
            offset = int(digits)
    before = body[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1)
    if "truncated" in text:
        return f"EOF while parsing a value at line {line} column {column}"
    for ours, theirs in (
        ("trailing comma", "trailing comma"),
        ("trailing characters", "trailing characters"),
        ("expected ':'", "expected `:`"),
    ):
        if ours in text:
            return f"{theirs} at line {line} column {column + 1}"
    return f"expected value at line {line} column {column + 1}"


def judge(
    call: RpcCall, *, userpass_ok: Callable[[str], bool], deny: frozenset[str]
) -> Refusal | None:
    """Whether ``call`` may reach KDF, in KDF's own order: auth first, then the method.

    Args:
        call: the call.
        userpass_ok: checks a userpass; called only for a call that needs one and sent one.
        deny: method names never served.
    """
    if not call.public:
        if call.userpass is None:
            return Refusal.USERPASS_NOT_SET
        if not userpass_ok(call.userpass):
            return Refusal.USERPASS_INVALID
    if call.method is not None and call.method in deny:
        return Refusal.METHOD_DENIED
    return None


# ---------------------------------------------------------------------------------------------
# KDF's error shapes


def legacy_error(message: str) -> bytes:
    """A legacy error body, ``{"error": "kdf_remote] <message>"}``."""
    return _encoder.encode({"error": f"{ORIGIN}] {message}"})


def v2_error(
    error_type: str, message: str, *, request_id: int | None, error_data: object = None
) -> bytes:
    """A v2 error body in KDF's ``MmError`` serialisation (``error_data`` left out when None)."""
    out: dict[str, object] = {
        "mmrpc": _V2_VERSION,
        "error": message,
        "error_path": ORIGIN,
        "error_trace": f"{ORIGIN}]",
        "error_type": error_type,
    }
    if error_data is not None:
        out["error_data"] = error_data
    out["id"] = request_id
    return _encoder.encode(out)


def refusal_reply(call: RpcCall, refusal: Refusal, *, attempts_left: int) -> Reply:
    """KDF's answer to a refused call, in the call's protocol (status and body)."""
    if refusal is Refusal.USERPASS_NOT_SET:
        message = "Userpass is not set!"
        if call.v2:
            return Reply(403, v2_error("UserpassIsNotSet", message, request_id=call.request_id))
        return Reply(500, legacy_error(message))
    if refusal is Refusal.USERPASS_INVALID:
        message = f"Userpass is invalid! - Rate Limit attempts left: {attempts_left}"
        if call.v2:
            data = {"error_type": "NbAttemptsLeft", "error_data": attempts_left}
            body = v2_error(
                "UserpassIsInvalid", message, request_id=call.request_id, error_data=data
            )
            return Reply(403, body)
        return Reply(500, legacy_error(message))
    # KDF's legacy dispatcher words a refused method "Selected method is not allowed: <why>".
    message = (
        f"Selected method is not allowed: {call.method} is disabled on this endpoint "
        "(kdf_compat.deny_methods)"
    )
    if call.v2:
        return Reply(403, v2_error("MethodNotAllowed", message, request_id=call.request_id))
    return Reply(500, legacy_error(message))


# ---------------------------------------------------------------------------------------------
# Batches


def _elements(request: RpcRequest) -> list[bytes]:
    # The body decoded once already, so this cannot fail; elements keep their exact bytes.
    return [bytes(raw) for raw in _raw_list_decoder.decode(request.body)]


def batch_reply(elements: list[bytes]) -> bytes:
    """A JSON array of already-encoded elements."""
    return b"[" + b",".join(elements) + b"]"


def forwarded_batch(request: RpcRequest, refused: list[Reply | None]) -> bytes:
    """The batch of the calls that go to KDF (those without a refusal), in their order."""
    elements = _elements(request)
    return batch_reply([raw for raw, reply in zip(elements, refused, strict=True) if reply is None])


class BatchMismatchError(ValueError):
    """KDF's answer to a forwarded batch is not an array of one answer per call."""


def merge_batch(refused: list[Reply | None], kdf_answer: bytes) -> bytes:
    """KDF's answers to the forwarded calls, with the refusals put back in their places.

    Raises:
        BatchMismatchError: KDF's answer is not a JSON array with one element per call sent.
    """
    try:
        answers = [bytes(raw) for raw in _raw_list_decoder.decode(kdf_answer)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise BatchMismatchError(
            "KDF answered a batch with something other than an array"
        ) from None
    expected = sum(1 for reply in refused if reply is None)
    if len(answers) != expected:
        raise BatchMismatchError(f"KDF answered {len(answers)} of {expected} batched calls")
    pending = iter(answers)
    return batch_reply([next(pending) if reply is None else reply.body for reply in refused])
