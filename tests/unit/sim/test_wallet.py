"""Wallet modes, fake deterministic keys and the DB layout (kdf-facts 1.5, 3.5)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from kdf_remote.sim.config import StartupError, decode_config
from kdf_remote.sim.wallet import (
    WalletIdentity,
    base58,
    create_wallet_dirs,
    db_root,
    decrypt_mnemonic,
    encrypt_mnemonic,
    load_identity,
    wallet_names,
)

pytestmark = pytest.mark.unit

WALLET_PW = "Wallet-Pass-9!"


def test_base58_known_vectors() -> None:
    """Bitcoin base58: leading zero bytes become '1'."""
    assert base58(b"") == ""
    assert base58(b"\x00\x00\x01") == "112"
    assert base58(b"hello world") == "StV1DL6CwTryKyV"


def test_identity_is_deterministic_and_realistic() -> None:
    """Same seed, same values; KMD pubtype 60 gives `R...`; peer ids start `12D3KooW`."""
    a = WalletIdentity(b"seed words", False, None)
    b = WalletIdentity(b"seed words", False, None)
    assert a.utxo_address(60) == b.utxo_address(60)
    assert a.utxo_address(60).startswith("R")
    assert a.utxo_address(0).startswith("1")
    assert a.eth_address().startswith("0x")
    assert len(a.eth_address()) == 42
    assert a.peer_id().startswith("12D3KooW")
    assert len(a.peer_id()) == 52
    hd = WalletIdentity(b"seed words", True, None)
    assert hd.utxo_address(60) != a.utxo_address(60)
    assert hd.shared_dir_name == a.shared_dir_name
    assert hd.wallet_dir_name != a.wallet_dir_name


def test_fake_secrets_are_obviously_fake() -> None:
    """Private keys and mnemonics are labelled fake and never contain the seed."""
    identity = WalletIdentity(b"my real words", False, None)
    assert identity.fake_private_key("KMD").startswith("kdfsim-fake-privkey-")
    mnemonic = identity.fake_mnemonic()
    assert mnemonic.startswith("kdfsim fake mnemonic ")
    assert "real" not in mnemonic


def test_mnemonic_encryption_round_trip() -> None:
    """Encrypted data decrypts with the right password and fails with a wrong one."""
    data = encrypt_mnemonic("alpha beta", WALLET_PW)
    assert "alpha" not in str(data)
    assert decrypt_mnemonic(data, WALLET_PW) == "alpha beta"
    with pytest.raises(StartupError, match="MAC tag mismatch"):
        decrypt_mnemonic(data, "Other-Pass-9!")
    with pytest.raises(StartupError, match="unsupported"):
        decrypt_mnemonic({"x": 1}, WALLET_PW)


def test_no_login_and_legacy_modes(tmp_path: Path) -> None:
    """No passphrase: no identity. Plain passphrase without wallet_name: legacy mode."""
    assert load_identity(decode_config({}, []), tmp_path) is None
    identity = load_identity(decode_config({"passphrase": "words"}, []), tmp_path)
    assert identity == WalletIdentity(b"words", False, None)
    with pytest.raises(StartupError, match=r"^The 'wallet_name' field not found in the config$"):
        load_identity(decode_config({"passphrase": {"ciphertext": "x"}}, []), tmp_path)


def test_named_wallet_is_stored_and_reloaded(tmp_path: Path) -> None:
    """A named wallet is stored encrypted (0600) and reloaded without the passphrase."""
    conf = {"wallet_name": "main wallet", "wallet_password": WALLET_PW, "passphrase": "abc def"}
    first = load_identity(decode_config(conf, []), tmp_path)
    path = tmp_path / "main wallet.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "abc def" not in path.read_text()
    again = load_identity(decode_config({**conf, "passphrase": None}, []), tmp_path)
    assert first is not None and again is not None
    assert again.seed == first.seed
    assert wallet_names(tmp_path) == ["main wallet"]
    with pytest.raises(StartupError, match="does not match"):
        load_identity(decode_config({**conf, "passphrase": "other"}, []), tmp_path)
    with pytest.raises(StartupError, match="MAC tag mismatch"):
        load_identity(decode_config({**conf, "wallet_password": "Wrong-Pass-9!"}, []), tmp_path)


def test_named_wallet_generates_a_mnemonic(tmp_path: Path) -> None:
    """Without a passphrase a new mnemonic is generated and stored."""
    conf = {"wallet_name": "fresh", "wallet_password": WALLET_PW}
    first = load_identity(decode_config(conf, []), tmp_path)
    second = load_identity(decode_config(conf, []), tmp_path)
    assert first is not None and second is not None
    assert first.seed == second.seed


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ({"wallet_name": "w"}, "wallet_password"),
        ({"wallet_name": "w", "wallet_password": "weak"}, "Password does not meet policy"),
        ({"wallet_name": "bad/name", "wallet_password": WALLET_PW}, "Invalid wallet name"),
    ],
)
def test_named_wallet_errors(tmp_path: Path, conf: dict[str, object], fragment: str) -> None:
    """A named wallet needs a password meeting the policy and a safe name."""
    with pytest.raises(StartupError, match=fragment):
        load_identity(decode_config(conf, []), tmp_path)


def test_weak_wallet_password_allowed_when_configured(tmp_path: Path) -> None:
    """allow_weak_password also relaxes the wallet_password policy."""
    conf = {"wallet_name": "w", "wallet_password": "weak", "allow_weak_password": True}
    assert load_identity(decode_config(conf, []), tmp_path) is not None


def test_db_root_resolution(tmp_path: Path) -> None:
    """dbdir, else ./DB when it exists, else ~/.kdf/DB."""
    home = tmp_path / "home"
    assert db_root(decode_config({}, []), tmp_path, home) == home / ".kdf" / "DB"
    (tmp_path / "DB").mkdir()
    assert db_root(decode_config({}, []), tmp_path, home) == tmp_path / "DB"
    chosen = tmp_path / "chosen"
    assert db_root(decode_config({"dbdir": str(chosen)}, []), tmp_path, home) == chosen


def test_wallet_dirs_and_sqlite(tmp_path: Path) -> None:
    """The per-wallet dir has KDF's subdirs, `.migration` and a real SQLite MM2.db."""
    identity = WalletIdentity(b"words", False, None)
    wallet_dir = create_wallet_dirs(tmp_path, identity)
    assert wallet_dir == tmp_path / identity.wallet_dir_name
    for sub in ("SWAPS/MY", "SWAPS/STATS/MAKER", "ORDERS/MY/HISTORY", "TX_CACHE", "UNSPENTS"):
        assert (wallet_dir / sub).is_dir()
    assert (wallet_dir / "GTC" / "orders").is_file()
    assert (wallet_dir / ".migration").is_file()
    for db in (wallet_dir / "MM2.db", tmp_path / identity.shared_dir_name / "MM2-shared.db"):
        connection = sqlite3.connect(db)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert connection.execute("SELECT current_migration FROM migration").fetchall() == [
                (1,)
            ]
        finally:
            connection.close()
    create_wallet_dirs(tmp_path, identity)
