"""KDF's RPC shapes (kdf-facts 2): request builders, userpass injection and response parsing.

KDF serves one endpoint, ``POST /``, routed by body. A legacy call is a flat object
(``{"method", "userpass", ...params}``); a v2 call is ``{"mmrpc": "2.0", "method", "params",
"userpass", "id"}`` and KDF rejects unknown top-level v2 fields; a JSON array is a batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kdf_remote.kdf.errors import KdfProtocolError, KdfRpcError

__all__ = [
    "KEY_MATERIAL_METHODS",
    "PUBLIC_METHODS",
    "EnabledCoin",
    "VersionInfo",
    "get_enabled_coins_request",
    "legacy_request",
    "method_names",
    "parse_enabled_coins",
    "parse_result",
    "parse_version",
    "stop_request",
    "v2_request",
    "version_request",
    "with_userpass",
]

PUBLIC_METHODS = frozenset(
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
    }
)
"""Methods KDF answers without a userpass (``PUBLIC_METHODS`` in KDF's ``rpc.rs``)."""

KEY_MATERIAL_METHODS = frozenset(
    {
        # Legacy: a coin's private key (KDF dispatcher_legacy.rs).
        "show_priv_key",
        # v2: the seed phrase, plaintext or encrypted (KDF dispatcher.rs).
        "get_mnemonic",
        # v2, newer KDF: private keys of enabled coins.
        "get_private_keys",
    }
)
"""Methods whose answer is key or seed material.

Matched by name whatever the protocol: KDF >= 2.5 retries an unknown legacy method as v2, so
``{"method": "get_mnemonic"}`` without ``mmrpc`` reaches the v2 handler too.
"""

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class VersionInfo(msgspec.Struct, frozen=True):
    """The ``version`` answer: an opaque version string and the build time."""

    result: str
    datetime: str | None = None


class EnabledCoin(msgspec.Struct, frozen=True):
    """One enabled coin; ``address`` is present in the legacy answer only."""

    ticker: str
    address: str | None = None


class _LegacyCoins(msgspec.Struct):
    result: list[EnabledCoin]


class _V2CoinsResult(msgspec.Struct):
    coins: list[EnabledCoin]


class _V2Coins(msgspec.Struct):
    result: _V2CoinsResult


def legacy_request(method: str, userpass: str | None = None, **params: Any) -> bytes:
    """A legacy (v1) call: ``method`` and its params as top-level keys."""
    body: dict[str, Any] = {"method": method, **params}
    if userpass is not None:
        body["userpass"] = userpass
    return _encoder.encode(body)


def v2_request(
    method: str, params: Any = None, *, userpass: str | None = None, request_id: int | None = None
) -> bytes:
    """A v2 (``mmrpc: "2.0"``) call. ``params`` is left out when None (unit-struct requests)."""
    body: dict[str, Any] = {"mmrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    if userpass is not None:
        body["userpass"] = userpass
    if request_id is not None:
        body["id"] = request_id
    return _encoder.encode(body)


def version_request() -> bytes:
    """``{"method":"version"}``: public, proves liveness but not credentials."""
    return b'{"method":"version"}'


def stop_request(userpass: str) -> bytes:
    """The legacy ``stop`` call (authenticated); KDF answers then exits 0."""
    return legacy_request("stop", userpass)


def get_enabled_coins_request(userpass: str) -> bytes:
    """The legacy ``get_enabled_coins`` call: an authenticated, side-effect-free liveness check."""
    return legacy_request("get_enabled_coins", userpass)


def _decode(body: bytes) -> Any:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError:
        # Not chained: the decoder's message can quote the body, which may hold a userpass.
        raise KdfProtocolError("the RPC body is not valid JSON") from None


def with_userpass(body: bytes, userpass: str) -> bytes:
    """Return ``body`` with any caller ``userpass`` removed and the real one inserted.

    Works on a single call object and on every object element of a batch; non-object batch
    elements are passed through for KDF to reject. Raises :class:`KdfProtocolError` when the body
    is not a JSON object or array.
    """
    parsed = _decode(body)
    if isinstance(parsed, dict):
        parsed["userpass"] = userpass
    elif isinstance(parsed, list):
        for element in parsed:
            if isinstance(element, dict):
                element["userpass"] = userpass
    else:
        raise KdfProtocolError("an RPC body must be a JSON object or a JSON array (batch)")
    return _encoder.encode(parsed)


def method_names(body: bytes) -> list[str]:
    """The method of a call, or of each element of a batch (``""`` where it is missing).

    Raises :class:`KdfProtocolError` when the body is not a JSON object or array.
    """
    parsed = _decode(body)
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not isinstance(parsed, (dict, list)):
        raise KdfProtocolError("an RPC body must be a JSON object or a JSON array (batch)")
    names = []
    for call in calls:
        method = call.get("method") if isinstance(call, dict) else None
        names.append(method if isinstance(method, str) else "")
    return names


def _raise_for_error(status: int, parsed: Any) -> None:
    if isinstance(parsed, dict) and "error" in parsed:
        error_type = parsed.get("error_type")
        raise KdfRpcError(
            status, str(parsed["error"]), error_type if isinstance(error_type, str) else None
        )
    if status >= 400:
        raise KdfRpcError(status, f"HTTP {status} without an error body")


def parse_result(status: int, body: bytes) -> Any:
    """The ``result`` of a legacy or v2 answer; raises :class:`KdfRpcError` for an error answer."""
    parsed = _decode(body)
    _raise_for_error(status, parsed)
    if not isinstance(parsed, dict) or "result" not in parsed:
        raise KdfProtocolError("KDF answered without a result")
    return parsed["result"]


def parse_version(status: int, body: bytes) -> VersionInfo:
    """Parse the ``version`` answer ``{"result": "<version>", "datetime": "<rfc3339>"}``."""
    _raise_for_error(status, _decode(body))
    try:
        return msgspec.json.decode(body, type=VersionInfo)
    except msgspec.ValidationError as exc:
        raise KdfProtocolError(f"unexpected version answer: {exc}") from None


def parse_enabled_coins(status: int, body: bytes) -> list[EnabledCoin]:
    """Parse ``get_enabled_coins`` in its legacy or v2 shape; raises :class:`KdfRpcError`."""
    parsed = _decode(body)
    _raise_for_error(status, parsed)
    shape: type[_LegacyCoins] | type[_V2Coins] = (
        _V2Coins if isinstance(parsed, dict) and "mmrpc" in parsed else _LegacyCoins
    )
    try:
        decoded = msgspec.convert(parsed, shape)
    except msgspec.ValidationError as exc:
        raise KdfProtocolError(f"unexpected get_enabled_coins answer: {exc}") from None
    return decoded.result.coins if isinstance(decoded, _V2Coins) else decoded.result
