"""The RPC methods kdf-sim answers, legacy and v2 (kdf-facts 2.5, 6.7).

Each handler takes the :class:`~kdf_remote.sim.node.Node` and the request (legacy: the whole flat
object; v2: ``params``) and returns the response payload. Legacy payloads are the whole body; v2
handlers return ``result`` only (the pipeline wraps it).
"""

from __future__ import annotations

from kdf_remote.sim.config import CoinConf
from kdf_remote.sim.node import EnabledCoin, Node
from kdf_remote.sim.protocol import (
    HandlerPanicError,
    LegacyError,
    LegacyHandler,
    MmRpcError,
    V2Handler,
)
from kdf_remote.sim.wallet import encrypt_mnemonic, wallet_names

__all__ = ["LEGACY_METHODS", "V2_METHODS"]


def _version(node: Node, _request: dict[str, object]) -> object:
    return {"result": node.version, "datetime": node.datetime}


def _stop(node: Node, _request: dict[str, object]) -> object:
    node.request_stop()
    return {"result": "success"}


def _legacy_enabled_coins(node: Node, _request: dict[str, object]) -> object:
    return {
        "result": [
            {"ticker": ticker, "address": coin.address} for ticker, coin in node.enabled.items()
        ]
    }


def _peer_id(node: Node, _request: dict[str, object]) -> object:
    if node.config.p2p_disabled:
        # KDF unwraps the missing P2P context and the handler panics.
        raise HandlerPanicError("P2PContext is not initialized")
    return {"result": node.peer_id}


def _ticker(request: dict[str, object]) -> str:
    coin = request.get("coin")
    if not isinstance(coin, str) or not coin:
        raise LegacyError("'coin' field is not found or is not a string")
    return coin


def _address(node: Node, conf: CoinConf) -> str:
    identity = node.identity
    if identity is None:
        raise LegacyError(
            "lp_coins:3920] Error initializing the crypto context: no passphrase is set"
        )
    return identity.utxo_address(conf.pubtype) if conf.is_utxo else identity.eth_address()


def _activate(node: Node, request: dict[str, object], *, electrum: bool) -> object:
    ticker = _ticker(request)
    if ticker in node.enabled:
        raise LegacyError(f"lp_coins:4005] Coin {ticker} already initialized")
    conf = node.coin_conf(ticker)
    if conf is None:
        raise LegacyError(f"lp_coins:3960] Coin {ticker} is not found in the coins config")
    if electrum and not conf.is_utxo:
        raise LegacyError(
            f"lp_coins:4027] Coin {ticker} protocol {conf.protocol} does not support electrum"
        )
    if electrum and not isinstance(request.get("servers"), list):
        raise LegacyError("lp_coins:4031] 'servers' must be an array of electrum servers")
    if not electrum and not conf.is_utxo and not isinstance(request.get("urls"), list):
        raise LegacyError("lp_coins:4040] 'urls' must be an array of RPC node URLs")
    address = _address(node, conf)
    node.enabled[ticker] = EnabledCoin(conf, address)
    body: dict[str, object] = {
        "coin": ticker,
        "address": address,
        "balance": "0",
        "unspendable_balance": "0",
        "required_confirmations": 1,
        "requires_notarization": False,
    }
    if conf.is_utxo:
        body["mature_confirmations"] = 100
    body["result"] = "success"
    return body


def _enable(node: Node, request: dict[str, object]) -> object:
    return _activate(node, request, electrum=False)


def _electrum(node: Node, request: dict[str, object]) -> object:
    return _activate(node, request, electrum=True)


def _enabled_coin(node: Node, request: dict[str, object]) -> EnabledCoin:
    ticker = _ticker(request)
    coin = node.enabled.get(ticker)
    if coin is None:
        raise LegacyError(f"lp_coins:4301] No such coin: {ticker}")
    return coin


def _my_balance(node: Node, request: dict[str, object]) -> object:
    coin = _enabled_coin(node, request)
    return {
        "address": coin.address,
        "balance": "0",
        "unspendable_balance": "0",
        "coin": coin.conf.ticker,
    }


def _show_priv_key(node: Node, request: dict[str, object]) -> object:
    coin = _enabled_coin(node, request)
    identity = node.identity
    if identity is None:
        raise LegacyError("lp_coins:4410] No crypto context")
    return {
        "result": {
            "coin": coin.conf.ticker,
            "priv_key": identity.fake_private_key(coin.conf.ticker),
        }
    }


def _v2_enabled_coins(node: Node, params: object) -> object:
    if params is not None:
        # The request type is a unit struct: serde accepts only null (or no `params`).
        raise MmRpcError(
            400,
            "InvalidRequest",
            "Error parsing request: invalid type: map, expected unit struct GetEnabledCoinsRequest",
        )
    return {"coins": [{"ticker": ticker} for ticker in node.enabled]}


def _get_wallet_names(node: Node, _params: object) -> object:
    return {
        "wallet_names": wallet_names(node.db_root),
        "activated_wallet": node.config.wallet_name,
    }


def _get_mnemonic(node: Node, params: object) -> object:
    identity = node.identity
    if not isinstance(params, dict) or params.get("format") not in ("plaintext", "encrypted"):
        raise MmRpcError(
            400,
            "InvalidRequest",
            "Error parsing request: expected `format` to be `plaintext` or `encrypted`",
        )
    if identity is None or node.config.wallet_name is None:
        raise MmRpcError(
            500,
            "WalletsStorageError",
            "Wallets storage error: no wallet is activated",
            path="lp_wallet",
            line=571,
        )
    password = node.config.wallet_password or ""
    if params["format"] == "encrypted":
        return {
            "format": "encrypted",
            "encrypted_mnemonic_data": encrypt_mnemonic(identity.fake_mnemonic(), password),
        }
    if params.get("password") != password:
        raise MmRpcError(400, "InvalidPassword", "Invalid password", path="lp_wallet", line=603)
    return {"format": "plaintext", "mnemonic": identity.fake_mnemonic()}


def _heartbeat_enable(node: Node, params: object) -> object:
    if node.config.event_stream_origin is None:
        raise MmRpcError(
            400, "EnableError", "Event streaming is disabled", path="streaming_activations", line=52
        )
    fields = params if isinstance(params, dict) else {}
    client_id = fields.get("client_id", 0)
    config = fields.get("config")
    interval = config.get("stream_interval_seconds", 5.0) if isinstance(config, dict) else 5.0
    if not isinstance(client_id, int) or isinstance(client_id, bool) or client_id < 0:
        raise MmRpcError(400, "InvalidRequest", "Error parsing request: `client_id` must be a u64")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        raise MmRpcError(
            400, "InvalidRequest", "Error parsing request: `stream_interval_seconds` must be > 0"
        )
    if client_id in node.heartbeats:
        raise MmRpcError(
            400,
            "EnableError",
            "Streamer HEARTBEAT is already running",
            path="streaming_activations",
            line=64,
        )
    node.heartbeats[client_id] = float(interval)
    node.streams_changed()
    return {"streamer_id": "HEARTBEAT"}


def _stream_disable(node: Node, params: object) -> object:
    fields = params if isinstance(params, dict) else {}
    client_id = fields.get("client_id", 0)
    if fields.get("streamer_id") != "HEARTBEAT" or client_id not in node.heartbeats:
        raise MmRpcError(
            400, "DisableError", "Streamer is not running", path="streaming_activations", line=91
        )
    del node.heartbeats[client_id]
    node.streams_changed()
    return {"result": "Success"}


LEGACY_METHODS: dict[str, LegacyHandler] = {
    "version": _version,
    "stop": _stop,
    "get_enabled_coins": _legacy_enabled_coins,
    "get_my_peer_id": _peer_id,
    "enable": _enable,
    "electrum": _electrum,
    "my_balance": _my_balance,
    "show_priv_key": _show_priv_key,
}

V2_METHODS: dict[str, V2Handler] = {
    "get_enabled_coins": _v2_enabled_coins,
    "get_wallet_names": _get_wallet_names,
    "get_mnemonic": _get_mnemonic,
    "stream::heartbeat::enable": _heartbeat_enable,
    "stream::disable": _stream_disable,
}
