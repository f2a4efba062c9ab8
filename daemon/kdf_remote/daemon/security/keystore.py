"""API keys: generation, the hashed keys file, and the in-memory store requests are checked against.

A plain key (``kdfr_`` + 43 URL-safe characters, 256 random bits) is shown once, at creation; the
keys file keeps only its SHA-256 digest (``sha256:<hex>``), its name, role, expiry and, for
request signing, the HMAC-derived signing key (which cannot be turned back into the API key).
An unsalted digest is enough because generated keys carry 256 bits of entropy: there is nothing
to brute-force. Plain keys from the YAML are hashed by the settings loader and kept as admin.

The running daemon re-reads the keys file when it changes (checked at most once a second, and
at once when an unknown key is presented), so ``kdf-remote-daemon keys add`` and ``keys revoke``
take effect without a restart, and so does revoking the key that issued a JWT: tokens name
their key by :attr:`KeyRecord.key_id` and are refused once it is gone.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.errors import (
    CredentialError,
    KeystoreError,
    SecurityConfigError,
)
from kdf_remote.daemon.security.files import locked, read_private_file, write_private_file

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import ApiKeyEntry

__all__ = [
    "API_KEY_PATTERN",
    "KEYS_FILE_VERSION",
    "KEY_NAME_PATTERN",
    "KeyRecord",
    "KeyStore",
    "NewKey",
    "StoredKey",
    "add_key",
    "derive_signing_key",
    "format_key_hash",
    "generate_api_key",
    "key_digest",
    "key_id_for",
    "list_keys",
    "parse_key_hash",
    "read_keys_file",
    "record_from_entry",
    "revoke_key",
]

log = logging.getLogger("kdf_remote.daemon.security")

API_KEY_PREFIX = "kdfr_"
API_KEY_PATTERN = re.compile(r"^kdfr_[A-Za-z0-9_-]{43}$")
KEY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEYS_FILE_VERSION = 1
MAX_PRESENTED_KEY = 256
"""Longer credentials are refused before hashing: no key this daemon accepts is that long."""
SIGNING_CONTEXT = b"kdf-remote request signing v1"
_KEY_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")
_FIELD = "security.keys_file"


def generate_api_key() -> str:
    """A new plain API key: ``kdfr_`` followed by 43 URL-safe characters (256 random bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(plain: str | bytes) -> bytes:
    """The SHA-256 digest a plain key is stored and looked up by."""
    data = plain.encode("utf-8") if isinstance(plain, str) else plain
    return hashlib.sha256(data).digest()


def format_key_hash(digest: bytes) -> str:
    """``sha256:<hex>``, the stored form of a key."""
    return "sha256:" + digest.hex()


def parse_key_hash(text: str) -> bytes:
    """The digest in a ``sha256:<hex>`` string.

    Raises:
        ValueError: not that form.
    """
    match = _KEY_HASH.match(text.lower())
    if match is None:
        raise ValueError("expected 'sha256:' followed by 64 hex digits")
    return bytes.fromhex(match.group(1))


def key_id_for(digest: bytes) -> str:
    """A stable public identifier of a key (tokens, audit lines); reveals nothing of the key.

    Derived from the digest with a domain label, so it differs from any prefix of the stored
    hash and a new key under an old name gets a new id (old tokens stay dead).
    """
    return hashlib.sha256(b"kdf-remote key id\x00" + digest).hexdigest()[:16]


def derive_signing_key(plain: str | bytes) -> bytes:
    """``HMAC-SHA256(key=api_key, msg=b"kdf-remote request signing v1")`` (architecture.md)."""
    data = plain.encode("utf-8") if isinstance(plain, str) else plain
    return hmac.new(data, SIGNING_CONTEXT, hashlib.sha256).digest()


# --------------------------------------------------------------------------------------------
# The keys file


class StoredKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of the keys file (JSON, 0600)."""

    name: str
    role: str
    """``viewer``, ``operator`` or ``admin``."""
    hash: str
    """``sha256:<hex>`` of the plain key."""
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    require_signing: bool = False
    """Every request made with this key (or its tokens) must be signed."""
    signing_key: str | None = None
    """Hex of :func:`derive_signing_key`: lets requests authenticated by a JWT be signed."""

    @property
    def digest(self) -> bytes:
        """The key's digest."""
        return parse_key_hash(self.hash)

    @property
    def key_id(self) -> str:
        """See :func:`key_id_for`."""
        return key_id_for(self.digest)

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class _KeysFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    keys: list[StoredKey]


class NewKey(msgspec.Struct, frozen=True, kw_only=True):
    """What ``keys add`` returns: the only time the plain key exists outside the caller."""

    name: str
    role: str
    key: str
    key_id: str
    expires_at: datetime | None = None


def _validate_stored(keys: Sequence[StoredKey], path: Path) -> None:
    active_names: set[str] = set()
    for index, entry in enumerate(keys):
        where = f"{path}: keys[{index}]"
        if KEY_NAME_PATTERN.match(entry.name) is None:
            raise KeystoreError(f"{where}.name: got {entry.name!r}, expected {_NAME_EXPECTED}")
        try:
            Role.parse(entry.role)
            parse_key_hash(entry.hash)
            signing_key = bytes.fromhex(entry.signing_key) if entry.signing_key else None
        except ValueError as exc:
            raise KeystoreError(f"{where}: {exc}") from None
        if signing_key is not None and len(signing_key) != 32:
            raise KeystoreError(f"{where}.signing_key: expected 64 hex digits")
        if entry.revoked_at is None:
            if entry.name in active_names:
                raise KeystoreError(f"{where}.name: {entry.name!r} is used by two active keys")
            active_names.add(entry.name)


_NAME_EXPECTED = "1-64 characters: letters, digits, '_', '.', '-' (not first)"


def read_keys_file(path: Path) -> list[StoredKey]:
    """Every entry of the keys file; a missing file holds none.

    Raises:
        SecurityConfigError: the file is readable by others or owned by another user.
        KeystoreError: the file is not a valid keys file.
    """
    if not path.exists():
        return []
    raw = read_private_file(path, field=_FIELD, max_bytes=16 << 20)
    try:
        doc = msgspec.json.decode(raw, type=_KeysFile)
    except msgspec.ValidationError as exc:
        raise KeystoreError(f"{path}: not a valid keys file: {exc}") from None
    except msgspec.DecodeError:
        raise KeystoreError(f"{path}: not a valid keys file: malformed JSON") from None
    if doc.version != KEYS_FILE_VERSION:
        raise KeystoreError(f"{path}: version {doc.version} is not supported")
    _validate_stored(doc.keys, path)
    return doc.keys


def _write_keys_file(path: Path, keys: Sequence[StoredKey]) -> None:
    doc = _KeysFile(version=KEYS_FILE_VERSION, keys=list(keys))
    write_private_file(path, msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n")


def add_key(
    path: Path,
    *,
    name: str,
    role: Role,
    expires_at: datetime | None = None,
    require_signing: bool = False,
    now: datetime | None = None,
) -> NewKey:
    """Create a key, store its hash in the keys file, and return the plain key (shown once).

    Raises:
        KeystoreError: bad name, the name is taken by an active key, or the expiry is past.
    """
    if KEY_NAME_PATTERN.match(name) is None:
        raise KeystoreError(f"key name: got {name!r}, expected {_NAME_EXPECTED}")
    moment = now or datetime.now(UTC)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= moment:
            raise KeystoreError(f"expiry: got {expires_at.isoformat()}, expected a future time")
    plain = generate_api_key()
    digest = key_digest(plain)
    entry = StoredKey(
        name=name,
        role=role.label,
        hash=format_key_hash(digest),
        created_at=moment,
        expires_at=expires_at,
        require_signing=require_signing,
        signing_key=derive_signing_key(plain).hex(),
    )
    with locked(path):
        keys = read_keys_file(path)
        if any(k.name == name and k.revoked_at is None for k in keys):
            raise KeystoreError(f"a key named {name!r} already exists; revoke it first")
        _write_keys_file(path, [*keys, entry])
    return NewKey(name=name, role=role.label, key=plain, key_id=entry.key_id, expires_at=expires_at)


def list_keys(path: Path) -> list[StoredKey]:
    """Every entry of the keys file, revoked ones included (no secrets besides hashes)."""
    return read_keys_file(path)


def revoke_key(path: Path, name: str, *, now: datetime | None = None) -> StoredKey:
    """Mark the active key ``name`` revoked; its requests and tokens are refused from then on.

    Raises:
        KeystoreError: no active key has that name.
    """
    moment = now or datetime.now(UTC)
    with locked(path):
        keys = read_keys_file(path)
        for index, entry in enumerate(keys):
            if entry.name == name and entry.revoked_at is None:
                revoked = msgspec.structs.replace(entry, revoked_at=moment)
                keys[index] = revoked
                _write_keys_file(path, keys)
                return revoked
    raise KeystoreError(f"no active key named {name!r}")


# --------------------------------------------------------------------------------------------
# The in-memory store


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A key as the daemon checks it: identity, role and what it requires."""

    key_id: str
    name: str
    role: Role
    digest: bytes
    expires_at: float | None = None
    """Unix time after which the key is refused."""
    require_signing: bool = False
    signing_key: bytes | None = None
    source: Literal["config", "file"] = "file"

    def expired(self, now: float) -> bool:
        """True at or after the expiry."""
        return self.expires_at is not None and now >= self.expires_at


def record_from_entry(entry: ApiKeyEntry) -> KeyRecord:
    """The record of a ``security.api_keys`` entry of the YAML (already hashed by the loader)."""
    return KeyRecord(
        key_id=key_id_for(entry.digest),
        name=entry.name,
        role=entry.role,
        digest=entry.digest,
        expires_at=entry.expires.timestamp() if entry.expires is not None else None,
        source="config",
    )


def _record_from_stored(entry: StoredKey) -> KeyRecord:
    digest = entry.digest
    return KeyRecord(
        key_id=key_id_for(digest),
        name=entry.name,
        role=Role.parse(entry.role),
        digest=digest,
        expires_at=entry.expires_at.timestamp() if entry.expires_at is not None else None,
        require_signing=entry.require_signing,
        signing_key=bytes.fromhex(entry.signing_key) if entry.signing_key else None,
        source="file",
    )


class KeyStore:
    """The keys a request may present: the YAML's, plus the keys file's active entries.

    Args:
        config_keys: records from ``security.api_keys``.
        keys_file: the keys file (may not exist yet), or None for config keys only.
        wall_clock: Unix time, for expiries.
        monotonic: paces the checks for a changed keys file.
        reload_every: seconds between those checks.

    Raises:
        SecurityConfigError: the keys file is unsafe or invalid, or a name is used twice.
    """

    def __init__(
        self,
        config_keys: Iterable[KeyRecord],
        keys_file: Path | None,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        reload_every: float = 1.0,
    ) -> None:
        self._config = tuple(config_keys)
        self._keys_file = keys_file
        self._wall = wall_clock
        self._monotonic = monotonic
        self._reload_every = reload_every
        self._next_check = 0.0
        self._file_stamp: tuple[int, int, int] | None = None
        self._by_digest: dict[bytes, KeyRecord] = {}
        self._by_id: dict[str, KeyRecord] = {}
        try:
            self._load(strict=True)
        except KeystoreError as exc:
            raise SecurityConfigError(
                _FIELD, str(keys_file), f"a valid keys file ({exc})"
            ) from None

    def __len__(self) -> int:
        return len(self._by_digest)

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._keys_file is None:
            return None
        try:
            info = self._keys_file.stat()
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _load(self, *, strict: bool) -> None:
        stamp = self._stamp()
        stored = read_keys_file(self._keys_file) if self._keys_file is not None else []
        records = list(self._config)
        names = {r.name for r in records}
        for entry in stored:
            if entry.revoked_at is not None:
                continue
            if entry.name in names:
                message = f"key name {entry.name!r} is used in both security.api_keys and {_FIELD}"
                if strict:
                    raise SecurityConfigError(_FIELD, entry.name, "a name not used in the YAML")
                # Ambiguous actor: fail closed for the file's entry, keep serving the rest.
                log.error("%s; ignoring the keys file's entry", message)
                continue
            names.add(entry.name)
            records.append(_record_from_stored(entry))
        self._by_digest = {r.digest: r for r in records}
        self._by_id = {r.key_id: r for r in records}
        self._file_stamp = stamp

    def refresh(self) -> None:
        """Re-read the keys file now if it changed; on a bad file, drop its keys (fail closed)."""
        self._next_check = self._monotonic() + self._reload_every
        if self._stamp() == self._file_stamp:
            return
        try:
            self._load(strict=False)
        except (KeystoreError, SecurityConfigError) as exc:
            log.error(  # noqa: TRY400  # the reason is the message; a traceback adds nothing
                "keys file rejected, only security.api_keys remain valid: %s", exc
            )
            self._by_digest = {r.digest: r for r in self._config}
            self._by_id = {r.key_id: r for r in self._config}
            self._file_stamp = self._stamp()

    def _maybe_refresh(self) -> None:
        if self._keys_file is not None and self._monotonic() >= self._next_check:
            self.refresh()

    def lookup(self, plain: str | bytes) -> KeyRecord:
        """The record of a presented plain key.

        Raises:
            CredentialError: unknown (or revoked) key, or expired key.
        """
        self._maybe_refresh()
        if not plain or len(plain) > MAX_PRESENTED_KEY:
            raise CredentialError("invalid API key")
        # A dict lookup by digest leaks nothing useful through timing: the attacker controls only
        # the preimage, and learning digest bytes gives no way back to a 256-bit key.
        digest = key_digest(plain)
        record = self._by_digest.get(digest)
        if record is None and self._keys_file is not None and self._stamp() != self._file_stamp:
            # A key added a moment ago works at once, not after the next paced check.
            self.refresh()
            record = self._by_digest.get(digest)
        if record is None:
            raise CredentialError("invalid API key")
        if record.expired(self._wall()):
            raise CredentialError(f"API key {record.name!r} has expired", guess=False)
        return record

    def get(self, key_id: str) -> KeyRecord | None:
        """The active, unexpired record with ``key_id`` (None once revoked or expired)."""
        self._maybe_refresh()
        record = self._by_id.get(key_id)
        if record is None or record.expired(self._wall()):
            return None
        return record

    def records(self) -> list[KeyRecord]:
        """Every active record (for status pages and tests)."""
        self._maybe_refresh()
        return list(self._by_digest.values())
