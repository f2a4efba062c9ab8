"""The KDF startup config model: typed fields, unknown rejected, KDF's own checks up front."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from kdf_remote.kdf import (
    REDACTED,
    SECRET_FIELDS,
    KdfConfigError,
    KdfStartupConfig,
    decode_startup_config,
    encode_startup_config,
)

pytestmark = pytest.mark.unit

GOOD_PASSWORD = "Rpc!Xy9zQ7w#"
SEED = "abandon ability able about above absent absorb abstract absurd abuse access accident"


def offline(**extra: Any) -> dict[str, Any]:
    """A minimal config KDF accepts for an offline node."""
    return {
        "gui": "test",
        "netid": 8762,
        "rpc_password": GOOD_PASSWORD,
        "disable_p2p": True,
        **extra,
    }


def test_minimal_offline_config_decodes() -> None:
    """An offline config with a strong password decodes with KDF's defaults derivable."""
    config = decode_startup_config(offline())
    assert config.netid == 8762
    assert config.effective_rpcport == 7783
    assert config.effective_rpcip == "127.0.0.1"
    assert config.p2p_disabled is True


def test_bytes_and_mapping_give_the_same_config() -> None:
    """JSON bytes, JSON text and a mapping decode to equal configs."""
    raw = offline(rpcport=7790, coins=[{"coin": "KMD", "protocol": {"type": "UTXO"}}])
    as_bytes = decode_startup_config(msgspec.json.encode(raw))
    assert as_bytes == decode_startup_config(raw)
    assert as_bytes == decode_startup_config(msgspec.json.encode(raw).decode())


def test_encode_round_trips_and_omits_absent_fields() -> None:
    """Encoding writes only the fields that were given (KDF applies its own defaults)."""
    config = decode_startup_config(offline(**{"1inch_api": "https://api.1inch.dev"}))
    encoded = msgspec.json.decode(encode_startup_config(config))
    assert encoded == offline(**{"1inch_api": "https://api.1inch.dev"})
    assert decode_startup_config(encode_startup_config(config)) == config


def test_every_documented_field_is_accepted() -> None:
    """All startup fields of kdf-facts 1.5 (and the SDK's ignored ones) are known."""
    config = decode_startup_config(
        {
            "gui": "g",
            "netid": 8762,
            "rpc_password": GOOD_PASSWORD,
            "allow_weak_password": False,
            "passphrase": SEED,
            "wallet_name": "my wallet_1",
            "wallet_password": GOOD_PASSWORD,
            "rpcport": 7783,
            "rpcip": "0.0.0.0",
            "rpc_local_only": False,
            "rpccors": "*",
            "https": False,
            "alt_names": ["localhost", "127.0.0.1"],
            "dbdir": "/tmp/db",
            "seednodes": ["seed01.kmdefi.net", "1.2.3.4"],
            "i_am_seed": False,
            "enable_hd": True,
            "myipaddr": "1.2.3.4",
            "event_streaming_configuration": {"access_control_allow_origin": "*"},
            "silent_console": True,
            "metrics_interval": 0,
            "prometheusport": 9100,
            "prometheus_credentials": "user:pw",
            "use_trading_proto_v2": False,
            "is_watcher": False,
            "use_watchers": True,
            "wss_certs": {"server_priv_key": "/k.pem", "certificate": "/c.pem"},
            "max_concurrent_connections": 100,
            "message_service_cfg": {"telegram": {"api_key": "x"}},
            "gas_api": {"provider": "Infura"},
            "1inch_api": "https://api.1inch.dev",
            "coins": [{"coin": "KMD"}],
            "mm2": 1,
            "userhome": "/home/u",
            "allow_registrations": False,
            "hd_account_id": 0,
        }
    )
    assert config.one_inch_api == "https://api.1inch.dev"
    assert config.bootstrap_node is False


def test_unknown_field_is_rejected_and_named() -> None:
    """An unknown field fails with its name; its value is not echoed (it may be a typoed secret)."""
    with pytest.raises(KdfConfigError) as info:
        decode_startup_config(offline(passphrse=SEED))
    assert info.value.field == "passphrse"
    assert SEED not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (offline(netid="8762"), "netid"),
        (offline(rpc_local_only="yes"), "rpc_local_only"),
        (offline(seednodes="seed01"), "seednodes"),
        (offline(coins=[1]), "coins[0]"),
        (offline(wss_certs={"certificate": "/c"}), "wss_certs"),
        (offline(rpcport=True), "rpcport"),
    ],
)
def test_wrong_types_name_the_field(raw: dict[str, Any], field: str) -> None:
    """A type error names the field (with its path for nested values)."""
    with pytest.raises(KdfConfigError) as info:
        decode_startup_config(raw)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("field", "extra"),
    [
        ("rpc_password", {"rpc_password": "weakSecretValue"}),
        ("wallet_password", {"wallet_name": "w", "wallet_password": "weakSecretValue"}),
        ("passphrase", {"passphrase": ["weakSecretValue"]}),
    ],
)
def test_secret_values_never_appear_in_errors(field: str, extra: dict[str, Any]) -> None:
    """A bad secret field's error names the field but shows *** instead of the value."""
    assert field in SECRET_FIELDS
    with pytest.raises(KdfConfigError) as info:
        decode_startup_config(offline(**extra))
    assert "weakSecretValue" not in str(info.value)
    assert info.value.field == field
    assert info.value.value == REDACTED


def test_repr_hides_secrets() -> None:
    """repr/str of a config never show passphrase, rpc_password or wallet_password."""
    config = decode_startup_config(offline(passphrase=SEED))
    assert SEED not in repr(config)
    assert GOOD_PASSWORD not in str(config)
    assert "gui='test'" in repr(config)


def test_redacted_copy_masks_only_set_secrets() -> None:
    """redacted() replaces every set secret and leaves the rest alone."""
    config = decode_startup_config(offline(passphrase=SEED)).redacted()
    assert config.passphrase == REDACTED
    assert config.rpc_password == REDACTED
    assert config.wallet_password is None
    assert config.gui == "test"


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"rpc_password": ""}, "rpc_password", "must not be empty"),
        ({"rpc_password": "Ab1!"}, "rpc_password", "at least 8"),
        ({"rpc_password": "MyPassword1!"}, "rpc_password", "word password"),
        ({"rpcport": 80}, "rpcport", "1024"),
        ({"rpcport": 70000}, "rpcport", "65535"),
        ({"rpcip": "localhost"}, "rpcip", "IP address"),
        ({"netid": 7777}, "netid", "deprecated"),
        ({"netid": 14429}, "netid", "14428"),
        ({"wallet_name": "bad/name", "wallet_password": GOOD_PASSWORD}, "wallet_name", "letters"),
        ({"wallet_name": "w"}, "wallet_password", "wallet_name"),
        ({"passphrase": {"encrypted": "x"}}, "wallet_name", "encrypted"),
        ({"alt_names": ["bad name"]}, "alt_names[0]", "DNS"),
        ({"prometheusport": 22}, "prometheusport", "1024"),
    ],
)
def test_kdf_startup_checks_are_made_up_front(
    extra: dict[str, Any], field: str, fragment: str
) -> None:
    """Configs KDF would exit 1 on are rejected here, naming the field and what was expected."""
    with pytest.raises(KdfConfigError) as info:
        decode_startup_config(offline(**extra))
    assert info.value.field == field
    assert fragment in str(info.value)


def test_weak_password_allowed_when_asked() -> None:
    """allow_weak_password skips the policy (but not the non-empty rule)."""
    config = decode_startup_config(offline(rpc_password="weak", allow_weak_password=True))
    assert config.rpc_password == "weak"
    with pytest.raises(KdfConfigError, match="empty"):
        decode_startup_config(offline(rpc_password="", allow_weak_password=True))


def test_rpcport_as_numeric_string_is_normalised() -> None:
    """KDF accepts "7790" for rpcport; the model holds the integer."""
    assert decode_startup_config(offline(rpcport="7790")).rpcport == 7790
    with pytest.raises(KdfConfigError, match="rpcport"):
        decode_startup_config(offline(rpcport="77x"))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"disable_p2p": None}, "Bootstrap node must also be a seed node."),
        ({"disable_p2p": False, "seednodes": []}, "Bootstrap node must also be a seed node."),
        (
            {
                "disable_p2p": None,
                "is_bootstrap_node": True,
                "i_am_seed": True,
                "seednodes": ["1.2.3.4"],
                "passphrase": SEED,
            },
            "Bootstrap node cannot have seed nodes to connect.",
        ),
        (
            {"disable_p2p": False, "is_bootstrap_node": False},
            "Non-bootstrap node must have seed nodes configured to connect.",
        ),
        ({"seednodes": ["1.2.3.4"]}, "Cannot disable P2P while seed nodes are configured."),
        ({"p2p_in_memory": True}, "Cannot disable P2P while using in-memory P2P mode."),
        ({"i_am_seed": True}, "Seed nodes cannot disable P2P."),
        ({"disable_p2p": None, "i_am_seed": True}, "Seed nodes cannot disable P2P."),
        (
            {"disable_p2p": False, "i_am_seed": True},
            "Seed node requires a persistent identity to generate its P2P key.",
        ),
    ],
)
def test_p2p_precheck_mirrors_kdf(extra: dict[str, Any], reason: str) -> None:
    """KDF's P2P precheck (lp_native_dex.rs) fails with KDF's own reason."""
    raw = {k: v for k, v in (offline() | extra).items() if v is not None}
    with pytest.raises(KdfConfigError) as info:
        decode_startup_config(raw)
    assert reason in str(info.value)


def test_p2p_configs_kdf_accepts() -> None:
    """A mainnet node with seednodes, and a bootstrap seed with an identity, are accepted."""
    raw = offline(seednodes=["seed01.kmdefi.net", "seed02.kmdefi.net"])
    del raw["disable_p2p"]
    assert decode_startup_config(raw).p2p_disabled is False
    seed = offline(i_am_seed=True, passphrase=SEED, disable_p2p=False)
    assert decode_startup_config(seed).bootstrap_node is True


def test_not_an_object_is_rejected() -> None:
    """The config must be a JSON object; invalid JSON is reported without echoing it."""
    with pytest.raises(KdfConfigError):
        decode_startup_config(b"[]")
    with pytest.raises(KdfConfigError) as info:
        decode_startup_config(b'{"passphrase": "' + SEED.encode() + b'"')
    assert SEED not in str(info.value)
    assert info.value.__cause__ is None


def test_config_is_frozen() -> None:
    """A validated config cannot be mutated afterwards (it would skip validation)."""
    config = decode_startup_config(offline())
    with pytest.raises(AttributeError):
        config.rpcport = 80  # type: ignore[misc]
    assert isinstance(config, KdfStartupConfig)
