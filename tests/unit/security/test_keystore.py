"""API keys: format, hashed storage, the keys file, expiry, revocation and hot reload."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.errors import (
    CredentialError,
    KeystoreError,
    SecurityConfigError,
)
from kdf_remote.daemon.security.keystore import (
    API_KEY_PATTERN,
    KeyRecord,
    KeyStore,
    add_key,
    derive_signing_key,
    format_key_hash,
    generate_api_key,
    key_digest,
    key_id_for,
    list_keys,
    parse_key_hash,
    read_keys_file,
    revoke_key,
)

from .conftest import FakeClock

pytestmark = [pytest.mark.unit, pytest.mark.security]


def test_generated_keys_have_the_documented_format_and_differ() -> None:
    """A plain key is ``kdfr_`` + 43 URL-safe characters, and no two are alike."""
    keys = {generate_api_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(API_KEY_PATTERN.match(k) for k in keys)


def test_key_hash_round_trips_and_rejects_malformed_text() -> None:
    """``sha256:<hex>`` parses back to the digest; anything else is refused."""
    digest = key_digest("kdfr_example")
    assert parse_key_hash(format_key_hash(digest)) == digest
    for bad in ("sha256:abc", "md5:" + "0" * 32, digest.hex()):
        with pytest.raises(ValueError, match="sha256"):
            parse_key_hash(bad)


def test_keys_file_holds_no_plain_key_and_is_private(tmp_path: Path) -> None:
    """After ``keys add`` the file (0600) holds the hash and signing key but never the key."""
    path = tmp_path / "state" / "keys.json"
    new = add_key(path, name="ci", role=Role.OPERATOR)
    text = path.read_text()
    assert new.key not in text
    assert format_key_hash(key_digest(new.key)) in text
    assert derive_signing_key(new.key).hex() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k.name for k in list_keys(path)] == ["ci"]


def test_add_refuses_bad_names_taken_names_and_past_expiry(tmp_path: Path) -> None:
    """Names are validated, unique among active keys, and expiry must be in the future."""
    path = tmp_path / "keys.json"
    add_key(path, name="ci", role=Role.VIEWER)
    with pytest.raises(KeystoreError, match="already exists"):
        add_key(path, name="ci", role=Role.ADMIN)
    with pytest.raises(KeystoreError, match="key name"):
        add_key(path, name="bad name\n", role=Role.ADMIN)
    with pytest.raises(KeystoreError, match="future"):
        add_key(path, name="old", role=Role.ADMIN, expires_at=datetime(2000, 1, 1, tzinfo=UTC))


def test_revoked_name_can_be_reused_with_a_new_identity(tmp_path: Path) -> None:
    """Revoking frees the name; the new key gets a different key id (old tokens stay dead)."""
    path = tmp_path / "keys.json"
    first = add_key(path, name="ci", role=Role.OPERATOR)
    revoked = revoke_key(path, "ci")
    assert revoked.revoked_at is not None
    second = add_key(path, name="ci", role=Role.OPERATOR)
    assert first.key_id != second.key_id
    with pytest.raises(KeystoreError, match="no active key"):
        revoke_key(path, "nobody")


def test_keys_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A keys file with group/other permission bits stops start-up."""
    path = tmp_path / "keys.json"
    add_key(path, name="ci", role=Role.VIEWER)
    path.chmod(0o644)
    with pytest.raises(SecurityConfigError, match="chmod 600"):
        read_keys_file(path)


def test_malformed_keys_file_is_refused(tmp_path: Path) -> None:
    """Unknown fields, a bad role or a bad hash make the file invalid (named in the error)."""
    path = tmp_path / "keys.json"
    add_key(path, name="ci", role=Role.VIEWER)
    doc = json.loads(path.read_text())
    doc["keys"][0]["role"] = "root"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="root"):
        read_keys_file(path)
    doc["keys"][0]["role"] = "viewer"
    doc["keys"][0]["extra"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="extra"):
        read_keys_file(path)


def _store(path: Path, clock: FakeClock, config: list[KeyRecord] | None = None) -> KeyStore:
    return KeyStore(config or [], path, wall_clock=clock.wall, monotonic=clock.monotonic)


def test_store_resolves_keys_and_refuses_unknown_and_oversized(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A known key resolves to its record; unknown or absurdly long credentials do not."""
    path = tmp_path / "keys.json"
    new = add_key(path, name="ci", role=Role.OPERATOR)
    store = _store(path, clock)
    record = store.lookup(new.key)
    assert (record.name, record.role, record.key_id) == ("ci", Role.OPERATOR, new.key_id)
    assert record.signing_key == derive_signing_key(new.key)
    with pytest.raises(CredentialError):
        store.lookup(generate_api_key())
    with pytest.raises(CredentialError):
        store.lookup("x" * 10_000)


def test_store_refuses_expired_keys(tmp_path: Path, clock: FakeClock) -> None:
    """A key is refused from its expiry on."""
    path = tmp_path / "keys.json"
    expires = datetime.fromtimestamp(clock.wall() + 60, UTC)
    new = add_key(
        path,
        name="temp",
        role=Role.VIEWER,
        expires_at=expires,
        now=datetime.fromtimestamp(clock.wall(), UTC),
    )
    store = _store(path, clock)
    assert store.lookup(new.key).name == "temp"
    clock.advance(60)
    with pytest.raises(CredentialError, match="expired"):
        store.lookup(new.key)
    assert store.get(new.key_id) is None


def test_revocation_reaches_the_running_store_after_the_reload_interval(
    tmp_path: Path, clock: FakeClock
) -> None:
    """``keys revoke`` edits the file; the store drops the key at its next check."""
    path = tmp_path / "keys.json"
    new = add_key(path, name="ci", role=Role.OPERATOR)
    store = _store(path, clock)
    assert store.get(new.key_id) is not None
    revoke_key(path, "ci")
    clock.advance(1.5)
    with pytest.raises(CredentialError):
        store.lookup(new.key)
    assert store.get(new.key_id) is None


def test_corrupted_file_at_run_time_fails_closed_for_file_keys(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A keys file that turns invalid drops its keys but keeps the YAML's."""
    path = tmp_path / "keys.json"
    new = add_key(path, name="ci", role=Role.OPERATOR)
    digest = key_digest("yaml-key-0123456789")
    config = [KeyRecord(key_id=key_id_for(digest), name="yaml", role=Role.ADMIN, digest=digest)]
    store = _store(path, clock, config)
    path.write_text("{not json")
    os.utime(path, ns=(1, 1))
    clock.advance(1.5)
    with pytest.raises(CredentialError):
        store.lookup(new.key)
    assert store.lookup("yaml-key-0123456789").name == "yaml"


def test_same_name_in_yaml_and_keys_file_refuses_start(tmp_path: Path, clock: FakeClock) -> None:
    """An actor name must be unambiguous: a clash between YAML and the file stops start-up."""
    path = tmp_path / "keys.json"
    add_key(path, name="ops", role=Role.OPERATOR)
    digest = key_digest("yaml-key-0123456789")
    config = [KeyRecord(key_id=key_id_for(digest), name="ops", role=Role.ADMIN, digest=digest)]
    with pytest.raises(SecurityConfigError, match="keys_file"):
        _store(path, clock, config)


def test_yaml_expiry_is_honoured(clock: FakeClock) -> None:
    """Records from the YAML carry their expiry too."""
    digest = key_digest("yaml-key-0123456789")
    record = KeyRecord(
        key_id=key_id_for(digest),
        name="y",
        role=Role.ADMIN,
        digest=digest,
        expires_at=clock.wall() + 10,
    )
    store = KeyStore([record], None, wall_clock=clock.wall, monotonic=clock.monotonic)
    assert store.lookup("yaml-key-0123456789").name == "y"
    clock.advance(timedelta(seconds=10).total_seconds())
    with pytest.raises(CredentialError, match="expired"):
        store.lookup("yaml-key-0123456789")
