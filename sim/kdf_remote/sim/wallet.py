"""Wallet modes, deterministic fake keys and the database directory layout (kdf-facts 1.5, 3.5).

Nothing here is real cryptography for real funds: addresses, peer ids and private keys are derived
from the passphrase with SHA-256 so that tests get stable, realistic-looking values. Stored wallet
files use a simulator-only format (PBKDF2 + SHA-256 keystream + HMAC) that KDF cannot read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec

from kdf_remote.sim.config import SimConfig, StartupError, check_password

__all__ = [
    "WalletIdentity",
    "base58",
    "create_wallet_dirs",
    "db_root",
    "decrypt_mnemonic",
    "encrypt_mnemonic",
    "load_identity",
    "wallet_names",
]

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_WALLET_SUFFIX = ".json"
_KDF_ITERATIONS = 20_000
_ALGORITHM = "KdfSimPbkdf2Sha256Stream"
_WALLET_SUBDIRS = (
    "SWAPS/MY",
    "SWAPS/STATS/MAKER",
    "SWAPS/STATS/TAKER",
    "TRANSACTIONS",
    "GTC",
    "PRICES",
    "UNSPENTS",
    "ORDERS/MY/MAKER",
    "ORDERS/MY/TAKER",
    "ORDERS/MY/HISTORY",
    "TX_CACHE",
)
_MM2_DB_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS migration (current_migration INTEGER NOT NULL UNIQUE);",
    "CREATE TABLE IF NOT EXISTS my_swaps (id INTEGER PRIMARY KEY, my_coin VARCHAR(255) NOT NULL,"
    " other_coin VARCHAR(255) NOT NULL, uuid VARCHAR(255) NOT NULL UNIQUE,"
    " started_at INTEGER NOT NULL);",
    "CREATE TABLE IF NOT EXISTS stats_swaps (id INTEGER PRIMARY KEY, maker_coin VARCHAR(255),"
    " taker_coin VARCHAR(255), uuid VARCHAR(255) NOT NULL UNIQUE, started_at INTEGER NOT NULL);",
    "CREATE TABLE IF NOT EXISTS my_orders (uuid VARCHAR(255) NOT NULL UNIQUE,"
    " order_type VARCHAR(255) NOT NULL, base VARCHAR(255) NOT NULL, rel VARCHAR(255) NOT NULL,"
    " created_at INTEGER NOT NULL);",
)


def base58(data: bytes) -> str:
    """Bitcoin-alphabet base58 of ``data`` (leading zero bytes become ``1``)."""
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _digest(label: str, seed: bytes) -> bytes:
    return hashlib.sha256(b"kdfsim:" + label.encode() + b":" + seed).digest()


@dataclass(frozen=True, slots=True)
class WalletIdentity:
    """Deterministic fake key material of a logged-in node."""

    seed: bytes
    hd: bool
    wallet_name: str | None

    def _key(self, label: str) -> bytes:
        return _digest(("hd:" if self.hd else "iguana:") + label, self.seed)

    @property
    def wallet_dir_name(self) -> str:
        """Hex id of the per-wallet DB dir (KDF: hex of rmd160 of the wallet pubkey)."""
        return self._key("pubkey-rmd160")[:20].hex()

    @property
    def shared_dir_name(self) -> str:
        """Hex id of the shared DB dir; KDF derives it from the seed only, not the HD mode."""
        return _digest("shared-db-id", self.seed)[:20].hex()

    def utxo_address(self, pubtype: int) -> str:
        """A base58check address with the coin's ``pubtype`` (60 gives KMD's ``R...``)."""
        payload = bytes([pubtype]) + self._key("address")[:20]
        check = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
        return base58(payload + check)

    def eth_address(self) -> str:
        """A ``0x`` address (lower-case: the EIP-55 checksum needs keccak, not in hashlib)."""
        return "0x" + self._key("address")[:20].hex()

    def peer_id(self) -> str:
        """A libp2p peer id: base58 of an identity multihash of an ed25519 key (``12D3KooW...``)."""
        return base58(b"\x00\x24\x08\x01\x12\x20" + self._key("p2p"))

    def fake_private_key(self, ticker: str) -> str:
        """Obviously fake key material, so tests can tell when a proxy leaks it."""
        return "kdfsim-fake-privkey-" + self._key("priv:" + ticker)[:16].hex()

    def fake_mnemonic(self) -> str:
        """Obviously fake mnemonic words derived from the seed (never the real passphrase)."""
        digest = self._key("mnemonic")
        return "kdfsim fake mnemonic " + " ".join(digest[i : i + 2].hex() for i in range(0, 18, 2))


def random_peer_id() -> str:
    """Peer id of a node without a persistent identity (KDF generates a random P2P key)."""
    return base58(b"\x00\x24\x08\x01\x12\x20" + secrets.token_bytes(32))


def db_root(config: SimConfig, cwd: Path, home: Path) -> Path:
    """``dbdir`` if set, else ``./DB`` when it exists, else ``~/.kdf/DB``."""
    if config.dbdir:
        return Path(config.dbdir)
    local = cwd / "DB"
    if local.is_dir():
        return local
    return home / ".kdf" / "DB"


def _stream_xor(key: bytes, iv: bytes, data: bytes) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < len(data):
        out += hashlib.sha256(key + iv + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(a ^ b for a, b in zip(data, out, strict=False))


def _keys(password: str, salt: bytes) -> tuple[bytes, bytes]:
    material = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _KDF_ITERATIONS, dklen=64)
    return material[:32], material[32:]


def encrypt_mnemonic(mnemonic: str, password: str) -> dict[str, object]:
    """Simulator-only encrypted mnemonic (the shape of wallet files and ``get_mnemonic``)."""
    salt, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    enc_key, mac_key = _keys(password, salt)
    ciphertext = _stream_xor(enc_key, iv, mnemonic.encode())
    tag = hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()
    return {
        "encryption_algorithm": _ALGORITHM,
        "key_derivation_details": {
            "PBKDF2": {"iterations": _KDF_ITERATIONS, "salt": base64.b64encode(salt).decode()}
        },
        "iv": base64.b64encode(iv).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "tag": base64.b64encode(tag).decode(),
    }


def decrypt_mnemonic(data: object, password: str) -> str:
    """Inverse of :func:`encrypt_mnemonic`; raises :class:`StartupError` on a wrong password."""
    try:
        assert isinstance(data, dict)
        details = data["key_derivation_details"]["PBKDF2"]
        salt = base64.b64decode(details["salt"])
        iv = base64.b64decode(data["iv"])
        ciphertext = base64.b64decode(data["ciphertext"])
        tag = base64.b64decode(data["tag"])
    except (AssertionError, KeyError, TypeError, ValueError):
        raise StartupError(
            "Error decrypting passphrase: unsupported encrypted data format"
        ) from None
    enc_key, mac_key = _keys(password, salt)
    expected = hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        raise StartupError("Error decrypting passphrase: HMAC error: MAC tag mismatch")
    return _stream_xor(enc_key, iv, ciphertext).decode()


def _check_wallet_name(name: str) -> None:
    if not name or not all(ch.isalnum() or ch in " -_" for ch in name):
        raise StartupError(
            f"Error processing passphrase: Invalid wallet name '{name}': only alphanumeric "
            "characters, spaces, dashes and underscores are allowed"
        )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_identity(config: SimConfig, root: Path) -> WalletIdentity | None:
    """KDF's ``process_passphrase_logic``: None in no-login mode, else the wallet's identity."""
    if config.wallet_name is None:
        if config.passphrase_encrypted:
            raise StartupError("The 'wallet_name' field not found in the config")
        if config.passphrase is None:
            return None
        return WalletIdentity(config.passphrase.encode(), config.enable_hd, None)
    name = config.wallet_name
    _check_wallet_name(name)
    password = config.wallet_password
    if not password:
        raise StartupError("The 'wallet_password' field not found in the config")
    if not config.allow_weak_password:
        problem = check_password(password)
        if problem is not None:
            raise StartupError(f"Password does not meet policy requirements: {problem}")
    return WalletIdentity(
        _wallet_mnemonic(config, root, name, password).encode(), config.enable_hd, name
    )


def _wallet_mnemonic(config: SimConfig, root: Path, name: str, password: str) -> str:
    path = root / (name + _WALLET_SUFFIX)
    given = config.passphrase
    if given is None and config.passphrase_encrypted:
        raise StartupError(
            "Encrypted passphrases are not supported by kdf-sim; pass it in plain text"
        )
    if path.exists():
        stored = decrypt_mnemonic(msgspec.json.decode(path.read_bytes()), password)
        if given is not None and given != stored:
            raise StartupError(
                f"Error processing passphrase: the passphrase does not match the one stored for "
                f"wallet '{name}'"
            )
        return stored
    mnemonic = given if given is not None else "kdfsim generated " + secrets.token_hex(16)
    _write_private(path, msgspec.json.encode(encrypt_mnemonic(mnemonic, password)))
    return mnemonic


def wallet_names(root: Path) -> list[str]:
    """Names of the wallets stored under the DB root (``<root>/<name>.json``)."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [p.name[: -len(_WALLET_SUFFIX)] for p in entries if p.name.endswith(_WALLET_SUFFIX)]


def create_wallet_dirs(root: Path, identity: WalletIdentity) -> Path:
    """KDF's ``fix_directories`` plus DB init: per-wallet dirs, ``MM2.db`` and the shared DB."""
    import sqlite3

    wallet_dir = root / identity.wallet_dir_name
    for sub in _WALLET_SUBDIRS:
        target = wallet_dir / sub
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise StartupError(f"{target} db dir is not writable") from None
        if not os.access(target, os.W_OK):
            raise StartupError(f"{target} db dir is not writable")
    orders = wallet_dir / "GTC" / "orders"
    orders.touch(exist_ok=True)
    (wallet_dir / ".migration").touch(exist_ok=True)
    shared_dir = root / identity.shared_dir_name
    shared_dir.mkdir(parents=True, exist_ok=True)
    for db_path in (wallet_dir / "MM2.db", shared_dir / "MM2-shared.db"):
        connection = sqlite3.connect(db_path)
        try:
            with connection:
                for statement in _MM2_DB_SCHEMA:
                    connection.execute(statement)
                connection.execute("INSERT OR IGNORE INTO migration VALUES (1)")
        finally:
            connection.close()
    return wallet_dir
