"""Where kdf-sim finds its config and coins, and how it validates them (kdf-facts 1.3-1.6, 1.8).

Errors carry KDF's own messages: :class:`StartupError` ends the process with exit code 1 (as
``mm2_main`` does after logging the message), :class:`PanicError` with exit code 101.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

__all__ = [
    "DEFAULT_RPC_PORT",
    "CoinConf",
    "PanicError",
    "SimConfig",
    "StartupError",
    "check_password",
    "decode_config",
    "load_coins",
    "load_config_json",
    "p2p_precheck",
    "resolve_rpc_addr",
]

DEFAULT_RPC_PORT = 7783
KDF_DIR_NAME = ".kdf"
DEPRECATED_NETIDS = frozenset({7777})
MAX_NETID = (65535 - 40 - 7783) // 4
_UTXO_PROTOCOLS = frozenset({"UTXO", "QTUM", "QRC20", "BCH", "SLPTOKEN"})


class StartupError(Exception):
    """A start-up failure KDF logs and then exits with code 1."""


class PanicError(Exception):
    """A main-thread panic: KDF prints the panic message and exits with code 101."""

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.location = location


@dataclass(frozen=True, slots=True)
class CoinConf:
    """The parts of one coins-file entry the simulator uses."""

    ticker: str
    protocol: str
    pubtype: int

    @property
    def is_utxo(self) -> bool:
        """True for coins activated with ``electrum`` (addresses in base58)."""
        return self.protocol in _UTXO_PROTOCOLS


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The start-up fields kdf-sim honours, with KDF's defaults applied."""

    rpc_password: str | None
    allow_weak_password: bool
    rpcport: object
    rpcip: str
    rpc_local_only: bool
    rpccors: str
    https: bool
    alt_names: tuple[str, ...]
    dbdir: str | None
    seednodes: tuple[str, ...] | None
    disable_p2p: bool | None
    i_am_seed: bool
    is_bootstrap_node: bool | None
    p2p_in_memory: bool
    netid: int
    passphrase: str | None
    passphrase_encrypted: bool
    wallet_name: str | None
    wallet_password: str | None
    enable_hd: bool
    event_stream_origin: str | None
    silent_console: bool
    coins: tuple[CoinConf, ...]

    @property
    def p2p_disabled(self) -> bool:
        """KDF's derived ``disable_p2p()``: explicit value, else true when nothing enables P2P."""
        if self.disable_p2p is not None:
            return self.disable_p2p
        return (
            self.is_bootstrap_node is not True and self.seednodes is None and not self.p2p_in_memory
        )

    @property
    def bootstrap_node(self) -> bool:
        """KDF's derived ``is_bootstrap_node()``."""
        if self.is_bootstrap_node is not None:
            return self.is_bootstrap_node
        return self.disable_p2p is not True and not self.seednodes


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise StartupError(f"File '{path}' is not present.")
    if path.is_dir():
        raise StartupError(f"Expected file but '{path}' is a directory.")
    try:
        return path.read_bytes()
    except OSError as err:
        raise StartupError(f"Couldn't read '{path}': {err}") from None


def _dependency_file(env: Mapping[str, str], variable: str, name: str, cwd: Path) -> Path:
    """KDF's ``find_kdf_dependency_file``: the env var, ``./<name>``, then ``~/.kdf/<name>``."""
    from_env = env.get(variable)
    if from_env:
        return Path(from_env)
    local = cwd / name
    if local.exists():
        return local
    return _home(env) / KDF_DIR_NAME / name


def load_config_json(argv_config: str | None, env: Mapping[str, str], cwd: Path) -> object:
    """The config: argv[1] text, else ``MM_CONF_PATH``, ``./MM2.json``, ``~/.kdf/MM2.json``."""
    if argv_config is not None:
        raw: bytes = argv_config.encode()
    else:
        raw = _read_file(_dependency_file(env, "MM_CONF_PATH", "MM2.json", cwd))
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        # KDF deliberately does not echo the content: it may hold the passphrase.
        raise StartupError("Couldn't parse mm2 config to JSON format!") from None


def load_coins(conf: Mapping[str, object], env: Mapping[str, str], cwd: Path) -> object:
    """The coins: config ``coins``, else ``MM_COINS_PATH``, ``./coins``, ``~/.kdf/coins``."""
    inline = conf.get("coins")
    if inline is not None:
        return inline
    path = _dependency_file(env, "MM_COINS_PATH", "coins", cwd)
    raw = _read_file(path)
    if not raw.strip():
        raise StartupError(f"No coins are set in JSON config and '{path}' file doesn't exist")
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as err:
        raise StartupError(
            f"Error {err} parsing the coins file, please ensure it contains valid json"
        ) from None


def _bool(conf: Mapping[str, object], key: str) -> bool | None:
    # KDF reads flags with `as_bool()`: anything but a JSON boolean counts as absent.
    value = conf.get(key)
    return value if isinstance(value, bool) else None


def _str(conf: Mapping[str, object], key: str) -> str | None:
    value = conf.get(key)
    return value if isinstance(value, str) else None


def _coins(raw: object) -> tuple[CoinConf, ...]:
    if not isinstance(raw, list):
        return ()
    coins = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("coin"), str):
            continue
        protocol = entry.get("protocol")
        kind = protocol.get("type") if isinstance(protocol, dict) else None
        pubtype = entry.get("pubtype")
        coins.append(
            CoinConf(
                ticker=entry["coin"],
                protocol=kind if isinstance(kind, str) else "UTXO",
                pubtype=pubtype if isinstance(pubtype, int) and 0 <= pubtype <= 255 else 0,
            )
        )
    return tuple(coins)


def _netid(conf: Mapping[str, object]) -> int:
    value = conf.get("netid")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StartupError(f"netid {value!r} is not a valid u16 network id")
    if value > 0xFFFF:
        raise PanicError(f"netid {value} > u16::MAX", "mm2src/mm2_core/src/mm_ctx.rs:241:18")
    return value


def _seednodes(conf: Mapping[str, object]) -> tuple[str, ...] | None:
    value = conf.get("seednodes")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StartupError(
            "P2P initializing error: 'Invalid seednodes: expected an array of strings'"
        )
    return tuple(value)


def _alt_names(conf: Mapping[str, object]) -> tuple[str, ...]:
    value = conf.get("alt_names")
    if value is None:
        return ("localhost", "127.0.0.1")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StartupError("alt_names must be an array of strings")
    return tuple(value)


def decode_config(conf: Mapping[str, object], coins: object) -> SimConfig:
    """Apply KDF's defaults to a decoded config; raises :class:`StartupError` on a bad field."""
    https = _bool(conf, "https") is True
    esc = conf.get("event_streaming_configuration")
    origin = None
    if isinstance(esc, dict):
        raw_origin = esc.get("access_control_allow_origin")
        origin = raw_origin if isinstance(raw_origin, str) else "*"
    passphrase = conf.get("passphrase")
    local_only = _bool(conf, "rpc_local_only")
    return SimConfig(
        rpc_password=_str(conf, "rpc_password"),
        allow_weak_password=_bool(conf, "allow_weak_password") is True,
        rpcport=conf.get("rpcport"),
        rpcip=_str(conf, "rpcip") or "127.0.0.1",
        rpc_local_only=True if local_only is None else local_only,
        rpccors=_str(conf, "rpccors")
        or ("https://localhost:3000" if https else "http://localhost:3000"),
        https=https,
        alt_names=_alt_names(conf),
        dbdir=_str(conf, "dbdir") or None,
        seednodes=_seednodes(conf),
        disable_p2p=_bool(conf, "disable_p2p"),
        i_am_seed=_bool(conf, "i_am_seed") is True,
        is_bootstrap_node=_bool(conf, "is_bootstrap_node"),
        p2p_in_memory=_bool(conf, "p2p_in_memory") is True,
        netid=_netid(conf),
        passphrase=passphrase if isinstance(passphrase, str) else None,
        passphrase_encrypted=isinstance(passphrase, dict),
        wallet_name=_str(conf, "wallet_name"),
        wallet_password=_str(conf, "wallet_password"),
        enable_hd=_bool(conf, "enable_hd") is True,
        event_stream_origin=origin,
        silent_console=_bool(conf, "silent_console") is True,
        coins=_coins(coins),
    )


def check_password(password: str) -> str | None:
    """KDF's password policy (kdf-facts 1.6): the first failing rule's message, or None."""
    if "password" in password.lower():
        return "Password can't contain the word password"
    if len(password) < 8:
        return "Password length should be at least 8 characters long"
    if not any("0" <= ch <= "9" for ch in password):
        return "Password should contain at least 1 digit"
    if not any("a" <= ch <= "z" for ch in password):
        return "Password should contain at least 1 lowercase character"
    if not any("A" <= ch <= "Z" for ch in password):
        return "Password should contain at least 1 uppercase character"
    if all(ch.isascii() and ch.isalnum() for ch in password):
        return "Password should contain at least 1 special character"
    run = 1
    for previous, current in itertools.pairwise(password):
        run = run + 1 if current == previous else 1
        if run >= 3:
            return "Password can't contain the same character 3 times in a row"
    return None


def check_rpc_password(conf: Mapping[str, object]) -> None:
    """``lp_main``'s checks on ``rpc_password``, run before anything else is initialised."""
    if "rpc_password" not in conf or conf["rpc_password"] is None:
        return
    value = conf["rpc_password"]
    if not isinstance(value, str):
        raise StartupError("rpc_password must be string")
    if not value:
        raise StartupError("rpc_password must not be empty")
    if conf.get("allow_weak_password") is True:
        return
    problem = check_password(value)
    if problem is not None:
        raise StartupError(problem)


def p2p_precheck(config: SimConfig, has_identity: bool) -> None:
    """KDF's ``p2p_precheck``; its errors abort start-up with exit code 1."""
    if config.netid in DEPRECATED_NETIDS:
        raise StartupError(
            f"P2P initializing error: 'Netid {config.netid} is deprecated. Please use another one.'"
        )
    if config.netid > MAX_NETID:
        raise StartupError(
            f"P2P initializing error: 'Netid {config.netid} is larger than max {MAX_NETID}'"
        )
    reason = _precheck_reason(config, has_identity)
    if reason is not None:
        raise StartupError(f"P2P initializing error: 'Precheck failed: '{reason}''")


def _precheck_reason(config: SimConfig, has_identity: bool) -> str | None:
    seeds = config.seednodes or ()
    if config.bootstrap_node and not config.i_am_seed:
        return "Bootstrap node must also be a seed node."
    if config.bootstrap_node and seeds:
        return "Bootstrap node cannot have seed nodes to connect."
    if config.p2p_disabled:
        if seeds:
            return "Cannot disable P2P while seed nodes are configured."
        if config.p2p_in_memory:
            return "Cannot disable P2P while using in-memory P2P mode."
        if config.i_am_seed:
            return "Seed nodes cannot disable P2P."
        return None
    if not config.bootstrap_node and not seeds and not config.p2p_in_memory:
        return "Non-bootstrap node must have seed nodes configured to connect."
    if config.i_am_seed and not has_identity:
        return "Seed node requires a persistent identity to generate its P2P key."
    return None


def resolve_rpc_addr(config: SimConfig) -> tuple[str, int]:
    """KDF's ``rpc_ip_port``; a bad value is a panic (``Invalid RPC port``) in ``spawn_rpc``."""
    location = "mm2src/mm2_main/src/rpc.rs:412:14"
    raw = config.rpcport
    port: int | None
    if raw is None:
        port = DEFAULT_RPC_PORT
    elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        port = raw
    elif isinstance(raw, str) and raw.isdigit():
        port = int(raw)
    else:
        port = None
    if port is None:
        raise PanicError(
            "Invalid RPC port: rpc:96] Invalid `rpcport` value. Expected a positive integer.",
            location,
        )
    if port != 0 and port < 1024:
        raise PanicError("Invalid RPC port: rpc:99] rpcport < 1024", location)
    if port > 0xFFFF:
        raise PanicError("Invalid RPC port: rpc:102] rpcport > u16", location)
    ip = config.rpcip
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, ip)
        except OSError:
            continue
        return ip, port
    raise PanicError(f"Invalid RPC port: rpc:106] invalid IP address syntax: {ip!r}", location)


def env_snapshot() -> dict[str, str]:
    """The process environment as a plain dict (one read, at the edge)."""
    return dict(os.environ)
