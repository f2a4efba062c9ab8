"""KDF's startup config (the MM2.json object, kdf-facts 1.5) as one typed, validated value.

:func:`decode_startup_config` is the single edge where a config from a user, a file or an API body
becomes a :class:`KdfStartupConfig`: unknown fields are rejected, types are checked, and every check
KDF itself makes before exiting with code 1 (password policy, port range, netid, wallet rules, P2P
precheck) is made here first, so a bad config is refused up front instead of crash-looping.
Errors are :class:`~kdf_remote.kdf.errors.KdfConfigError` naming the field, the value (never a
secret's value) and what was expected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from kdf_remote.kdf.errors import REDACTED, KdfConfigError
from kdf_remote.kdf.password import check_password
from kdf_remote.kdf.ports import DEFAULT_RPC_PORT, DEPRECATED_NETIDS, MAX_NETID, MIN_RPC_PORT

__all__ = [
    "SECRET_FIELDS",
    "EventStreamingConfiguration",
    "KdfStartupConfig",
    "WssCerts",
    "decode_startup_config",
    "encode_startup_config",
    "validate_startup_config",
]

SECRET_FIELDS = ("passphrase", "rpc_password", "wallet_password")
"""Fields whose values are secrets: write-only through any API, never logged."""

# Opaque JSON objects KDF reads feature by feature (coin definitions, gas/telegram settings).
JsonObject = dict[str, Any]

_WALLET_NAME = re.compile(r"[A-Za-z0-9 _-]+")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MEMORY_SEED = re.compile(r"/memory/[0-9]{1,5}")
_MAX_PORT = 65535


class EventStreamingConfiguration(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``event_streaming_configuration``: enables KDF's ``/event-stream`` SSE endpoint."""

    access_control_allow_origin: str | None = None
    worker_path: str | None = None


class WssCerts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``wss_certs``: certificate and key files for P2P over secure websockets."""

    server_priv_key: str
    certificate: str


class KdfStartupConfig(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Every startup field KDF reads (kdf-facts 1.5). ``None`` means "absent: KDF's default".

    Build one with :func:`decode_startup_config`, which also runs :func:`validate_startup_config`.
    ``repr()`` never shows secret values.
    """

    gui: str | None = None
    netid: int | None = None
    rpc_password: str | None = None
    allow_weak_password: bool | None = None
    passphrase: str | JsonObject | None = None
    """A plaintext mnemonic, or KDF's encrypted-passphrase object (needs ``wallet_name``)."""
    wallet_name: str | None = None
    wallet_password: str | None = None
    rpcport: int | None = None
    rpcip: str | None = None
    rpc_local_only: bool | None = None
    rpccors: str | None = None
    https: bool | None = None
    alt_names: list[str] | None = None
    dbdir: str | None = None
    seednodes: list[str] | None = None
    disable_p2p: bool | None = None
    i_am_seed: bool | None = None
    is_bootstrap_node: bool | None = None
    p2p_in_memory: bool | None = None
    p2p_in_memory_port: int | None = None
    enable_hd: bool | None = None
    myipaddr: str | None = None
    event_streaming_configuration: EventStreamingConfiguration | None = None
    silent_console: bool | None = None
    metrics_interval: float | None = None
    prometheusport: int | None = None
    prometheus_credentials: str | None = None
    use_trading_proto_v2: bool | None = None
    is_watcher: bool | None = None
    use_watchers: bool | None = None
    wss_certs: WssCerts | None = None
    max_concurrent_connections: int | None = None
    message_service_cfg: JsonObject | None = None
    gas_api: JsonObject | None = None
    one_inch_api: str | None = msgspec.field(default=None, name="1inch_api")
    coins: list[JsonObject] | None = None
    """Coin definitions; the supervisor writes them to their own file (``MM_COINS_PATH``)."""
    # Sent by the Flutter SDK and ignored by KDF; accepted so SDK-made configs are not refused.
    mm2: int | None = None
    userhome: str | None = None
    allow_registrations: bool | None = None
    hd_account_id: int | None = None

    def __repr__(self) -> str:
        shown = [
            f"{name}={REDACTED if name in SECRET_FIELDS else value!r}"
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not None
        ]
        return f"KdfStartupConfig({', '.join(shown)})"

    __str__ = __repr__

    @property
    def effective_rpcport(self) -> int:
        """The RPC port KDF binds (7783 when absent)."""
        return DEFAULT_RPC_PORT if self.rpcport is None else self.rpcport

    @property
    def effective_rpcip(self) -> str:
        """The RPC bind address (127.0.0.1 when absent)."""
        return self.rpcip or "127.0.0.1"

    @property
    def p2p_disabled(self) -> bool:
        """KDF's ``disable_p2p()``, default included."""
        if self.disable_p2p is not None:
            return self.disable_p2p
        return (
            self.is_bootstrap_node is not True and self.seednodes is None and not self.p2p_in_memory
        )

    @property
    def bootstrap_node(self) -> bool:
        """KDF's ``is_bootstrap_node()``, default included."""
        if self.is_bootstrap_node is not None:
            return self.is_bootstrap_node
        return self.disable_p2p is not True and not self.seednodes

    def redacted(self) -> KdfStartupConfig:
        """A copy with each secret that is set replaced by ``"***"`` (for showing, not using)."""
        changes = {name: REDACTED for name in SECRET_FIELDS if getattr(self, name) is not None}
        return msgspec.structs.replace(self, **changes)

    def without_coins(self) -> KdfStartupConfig:
        """A copy with ``coins`` removed (the list travels in its own file)."""
        return msgspec.structs.replace(self, coins=None)


_FIELD_NAMES = frozenset(field.encode_name for field in msgspec.structs.fields(KdfStartupConfig))
_ERROR_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_decoder = msgspec.json.Decoder()


def _field_of(message: str) -> str:
    match = _ERROR_PATH.search(message)
    if match is None or not match.group(1):
        return "$"
    return match.group(1)


def _top_level(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _expected_of(message: str) -> str:
    head = _ERROR_PATH.sub("", message)
    if head.startswith("Expected "):
        head = head.removeprefix("Expected ").split(", got", 1)[0]
    return head.replace("`", "").replace(" | null", "")


def _as_mapping(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        obj: object = dict(raw)
    else:
        try:
            obj = _decoder.decode(raw)
        except msgspec.DecodeError:
            # The decoder's message may quote the input, which can hold a secret: do not chain it.
            raise KdfConfigError("$", "<not JSON>", "a JSON object") from None
    if not isinstance(obj, dict):
        raise KdfConfigError("$", type(obj).__name__, "a JSON object")
    return obj


def _normalise_rpcport(obj: dict[str, Any]) -> None:
    # KDF accepts the port as a number or a numeric string; keep one type from here on.
    port = obj.get("rpcport")
    if isinstance(port, str):
        if not port.strip().isdigit():
            raise KdfConfigError("rpcport", port, "an integer port or a numeric string")
        obj["rpcport"] = int(port)


def decode_startup_config(raw: bytes | str | Mapping[str, Any]) -> KdfStartupConfig:
    """Parse and validate a KDF startup config from JSON bytes/text or a mapping.

    Raises :class:`KdfConfigError` naming the first bad field.
    """
    obj = _as_mapping(raw)
    for key in obj:
        if key not in _FIELD_NAMES:
            raise KdfConfigError(
                str(key), obj[key], "a KDF startup field (unknown field)", secret=True
            )
    _normalise_rpcport(obj)
    try:
        config = msgspec.convert(obj, KdfStartupConfig, strict=True)
    except msgspec.ValidationError as exc:
        path = _field_of(str(exc))
        top = _top_level(path)
        raise KdfConfigError(
            path, obj.get(top), _expected_of(str(exc)), secret=top in SECRET_FIELDS
        ) from None
    validate_startup_config(config)
    return config


def encode_startup_config(config: KdfStartupConfig) -> bytes:
    """The JSON KDF reads (absent fields omitted). Holds secrets: write it only to a 0600 file."""
    return msgspec.json.encode(config)


def _check_port(field: str, port: int | None, *, allow_zero: bool) -> None:
    if port is None or (allow_zero and port == 0):
        return
    if not MIN_RPC_PORT <= port <= _MAX_PORT:
        expected = (
            f"0 (any free port) or {MIN_RPC_PORT}..{_MAX_PORT}"
            if allow_zero
            else (f"{MIN_RPC_PORT}..{_MAX_PORT}")
        )
        raise KdfConfigError(field, port, expected)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return 0 < len(text) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels)


def _check_password_field(field: str, value: str | None, *, weak_ok: bool) -> None:
    if value is None:
        return
    if not value:
        raise KdfConfigError(
            field, value, f"a non-empty string ({field} must not be empty)", secret=True
        )
    if not weak_ok and (message := check_password(value)) is not None:
        raise KdfConfigError(
            field,
            value,
            f"a password KDF accepts: {message} (or set allow_weak_password)",
            secret=True,
        )


def _check_wallet(config: KdfStartupConfig) -> None:
    weak_ok = config.allow_weak_password is True
    _check_password_field("rpc_password", config.rpc_password, weak_ok=weak_ok)
    if config.wallet_name is not None:
        if not _WALLET_NAME.fullmatch(config.wallet_name):
            raise KdfConfigError(
                "wallet_name", config.wallet_name, "letters, digits, spaces, '-' and '_' only"
            )
        if config.wallet_password is None:
            raise KdfConfigError("wallet_password", None, "a password when wallet_name is set")
    _check_password_field("wallet_password", config.wallet_password, weak_ok=weak_ok)
    if isinstance(config.passphrase, dict) and config.wallet_name is None:
        raise KdfConfigError("wallet_name", None, "a wallet name when the passphrase is encrypted")
    if isinstance(config.passphrase, str) and not config.passphrase:
        raise KdfConfigError("passphrase", "", "a non-empty passphrase", secret=True)


def _check_network(config: KdfStartupConfig) -> None:
    if config.netid is not None:
        if not 0 <= config.netid <= MAX_NETID:
            raise KdfConfigError("netid", config.netid, f"an integer in 0..{MAX_NETID}")
        if config.netid in DEPRECATED_NETIDS:
            raise KdfConfigError("netid", config.netid, "a netid that is not deprecated (7777)")
    _check_port("rpcport", config.rpcport, allow_zero=True)
    _check_port("prometheusport", config.prometheusport, allow_zero=False)
    if config.rpcip is not None and not _is_ip(config.rpcip):
        raise KdfConfigError("rpcip", config.rpcip, "an IP address (no host names)")
    for index, name in enumerate(config.alt_names or ()):
        if not (_is_ip(name) or _is_dns_name(name)):
            raise KdfConfigError(f"alt_names[{index}]", name, "a DNS name or an IP address")
    for index, seed in enumerate(config.seednodes or ()):
        valid_ip = _is_ip(seed) and ipaddress.ip_address(seed).version == 4
        if not (valid_ip or _is_dns_name(seed) or _MEMORY_SEED.fullmatch(seed)):
            raise KdfConfigError(
                f"seednodes[{index}]",
                seed,
                "an IPv4 address or DNS name without a port, or /memory/<port>",
            )
    if config.metrics_interval is not None and config.metrics_interval < 0:
        raise KdfConfigError("metrics_interval", config.metrics_interval, "seconds >= 0")


def _p2p_precheck(config: KdfStartupConfig) -> None:
    # KDF's p2p_precheck (lp_native_dex.rs), in its order; each failure is an exit 1 in KDF.
    seed = config.i_am_seed is True
    bootstrap = config.bootstrap_node
    disabled = config.p2p_disabled
    seednodes = config.seednodes or []

    def fail(reason: str) -> KdfConfigError:
        return KdfConfigError(
            "disable_p2p/seednodes/i_am_seed", None, f"a P2P setup KDF accepts: {reason}"
        )

    if bootstrap and not seed:
        raise fail(
            "Bootstrap node must also be a seed node. (for an offline node set "
            "disable_p2p: true; otherwise give seednodes)"
        )
    if bootstrap and seednodes:
        raise fail("Bootstrap node cannot have seed nodes to connect.")
    if not bootstrap and not seednodes and not disabled:
        raise fail("Non-bootstrap node must have seed nodes configured to connect.")
    if disabled and seednodes:
        raise fail("Cannot disable P2P while seed nodes are configured.")
    if disabled and config.p2p_in_memory:
        raise fail("Cannot disable P2P while using in-memory P2P mode.")
    if disabled and seed:
        raise fail("Seed nodes cannot disable P2P.")
    if seed and config.passphrase is None and config.wallet_name is None:
        raise fail("Seed node requires a persistent identity to generate its P2P key.")


def validate_startup_config(config: KdfStartupConfig) -> None:
    """Run every check KDF makes on its config before it exits with code 1.

    :func:`decode_startup_config` calls this; call it directly after building a config in code.
    """
    _check_wallet(config)
    _check_network(config)
    _p2p_precheck(config)
