"""Release archives and the release store without any network: unpacking rules, validation,
switch and rollback of the ``current`` symlink."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from _release_fixtures import (
    corrupt_zip,
    release_script,
    release_zip,
    symlink_zip,
    traversal_zip,
    two_binaries_zip,
)
from kdf_remote.kdf.release import (
    BadArchiveError,
    DownloadPolicy,
    Origin,
    OriginNotAllowedError,
    ReleaseError,
    ReleaseSpec,
    ReleaseStore,
    UnknownReleaseError,
    _check_redirect,
    extract_binary,
    parse_origin,
)

pytestmark = pytest.mark.unit

SHA = "a" * 64


def _archive(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "release.zip"
    path.write_bytes(data)
    (tmp_path / "out").mkdir()
    return path


def test_extract_kdf_binary_is_executable(tmp_path: Path) -> None:
    """A CI-style zip yields ``kdf`` with mode 0755 and the script's exact bytes."""
    archive = _archive(tmp_path, release_zip("2.5.1-beta"))
    assert extract_binary(archive, tmp_path / "out", max_bytes=1 << 20) == "kdf"
    binary = tmp_path / "out" / "kdf"
    assert binary.read_bytes() == release_script("2.5.1-beta")
    assert binary.stat().st_mode & 0o777 == 0o755


def test_extract_renames_legacy_mm2(tmp_path: Path) -> None:
    """An ``mm2`` binary is stored as ``kdf``."""
    archive = _archive(tmp_path, release_zip("2.0.0-beta", binary_name="mm2"))
    assert extract_binary(archive, tmp_path / "out", max_bytes=1 << 20) == "mm2"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["kdf"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (traversal_zip(), "unsafe path"),
        (symlink_zip(), "symlink"),
        (two_binaries_zip(), "single kdf or mm2"),
        (release_zip("1", binary_name="bin/other"), "expected a kdf or mm2"),
        (corrupt_zip(), "valid zip"),
        (b"PK\x03\x04 but not a zip at all", "valid zip"),
    ],
    ids=["traversal", "symlink", "two-files", "wrong-name", "corrupt", "garbage"],
)
def test_extract_refuses_bad_archives(tmp_path: Path, data: bytes, message: str) -> None:
    """Unsafe or unexpected archives are refused and nothing lands outside the target dir."""
    archive = _archive(tmp_path, data)
    with pytest.raises(BadArchiveError, match=message):
        extract_binary(archive, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "kdf").exists()


def test_extract_refuses_binary_over_cap(tmp_path: Path) -> None:
    """A binary larger than ``max_bytes`` is refused before it is written."""
    archive = _archive(tmp_path, release_zip("1.0"))
    with pytest.raises(BadArchiveError, match="above"):
        extract_binary(archive, tmp_path / "out", max_bytes=16)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"version": "../../etc", "url": "https://h/x.zip", "sha256": SHA}, "version"),
        ({"version": "1.0", "url": "https://h/x.zip", "sha256": "abc"}, "sha256"),
        ({"version": "1.0", "url": "ftp://h/x.zip", "sha256": SHA}, "url"),
        ({"version": "1.0", "url": "https://u:p@h/x.zip", "sha256": SHA}, "url"),
        ({"version": "1.0", "url": "/relative.zip", "sha256": SHA}, "url"),
    ],
    ids=["version-traversal", "short-sha", "ftp", "credentials", "relative"],
)
def test_release_spec_rejects_bad_fields(fields: dict[str, str], name: str) -> None:
    """Each invalid field is refused with its name in the message."""
    with pytest.raises(ReleaseError, match=f"^{name}:"):
        ReleaseSpec(**fields)


def test_origin_parsing_and_default_ports() -> None:
    """Origins compare on scheme, host and port, with the scheme's default port filled in."""
    assert parse_origin("https://GitHub.com") == Origin("https", "github.com", 443)
    assert parse_origin("http://127.0.0.1:8080") == Origin("http", "127.0.0.1", 8080)
    assert str(parse_origin("https://github.com:443")) == "https://github.com"
    with pytest.raises(ReleaseError, match="scheme://host"):
        parse_origin("https://github.com/KomodoPlatform")
    with pytest.raises(ReleaseError, match="allowed_origins: empty"):
        DownloadPolicy(allowed_origins=())


def test_redirect_rules() -> None:
    """Same origin passes; another host, another port or an https->http downgrade is refused."""
    policy = DownloadPolicy(allowed_origins=("https://a.example", "https://b.example"))
    allowed = policy.origins()
    src = httpx.URL("https://a.example/x.zip")
    _check_redirect(src, httpx.URL("https://a.example/y.zip"), allowed, policy)
    for target in ("https://b.example/y", "https://a.example:8443/y", "http://a.example/y"):
        with pytest.raises(OriginNotAllowedError):
            _check_redirect(src, httpx.URL(target), allowed, policy)
    lenient = DownloadPolicy(
        allowed_origins=policy.allowed_origins, redirect_to_allowed_origins=True
    )
    _check_redirect(src, httpx.URL("https://b.example/y"), allowed, lenient)
    with pytest.raises(OriginNotAllowedError):
        _check_redirect(src, httpx.URL("https://c.example/y"), allowed, lenient)


def _adopt(store: ReleaseStore, tmp_path: Path, version: str) -> None:
    source = tmp_path / f"kdf-{version}"
    source.write_bytes(release_script(version))
    store.adopt(source, version)


def test_switch_and_rollback_move_current_and_previous(tmp_path: Path) -> None:
    """switch() makes a version current and keeps the old one as previous; rollback swaps back."""
    store = ReleaseStore(tmp_path / "bin")
    _adopt(store, tmp_path, "1.0")
    _adopt(store, tmp_path, "2.0")
    assert store.current_version() is None
    first = store.switch("1.0")
    assert (first.current, first.previous, first.changed) == ("1.0", None, True)
    second = store.switch("2.0")
    assert (second.current, second.previous) == ("2.0", "1.0")
    assert store.current_link.is_symlink()
    assert store.current_binary.read_bytes() == release_script("2.0")
    back = store.rollback()
    assert (back.current, back.previous) == ("1.0", "2.0")
    assert store.current_binary.read_bytes() == release_script("1.0")
    assert store.switch("1.0").changed is False
    leftovers = [p.name for p in store.bin_dir.iterdir() if p.name.startswith(".current")]
    assert leftovers == []


def test_switch_to_unknown_version_changes_nothing(tmp_path: Path) -> None:
    """Switching to a version that is not installed raises and leaves current alone."""
    store = ReleaseStore(tmp_path / "bin")
    _adopt(store, tmp_path, "1.0")
    store.switch("1.0")
    with pytest.raises(UnknownReleaseError):
        store.switch("3.0")
    assert str(store.current_link.readlink()) == "releases/1.0"
    with pytest.raises(UnknownReleaseError, match="no previous"):
        store.rollback()


def test_prune_keeps_current_and_previous(tmp_path: Path) -> None:
    """prune() drops the oldest releases but never current or previous."""
    store = ReleaseStore(tmp_path / "bin")
    for version in ("1.0", "2.0", "3.0", "4.0"):
        _adopt(store, tmp_path, version)
    store.switch("1.0")
    store.switch("2.0")
    assert store.prune(keep=2) == ["3.0", "4.0"]
    assert [r.version for r in store.installed()] == ["1.0", "2.0"]
    with pytest.raises(ReleaseError, match="kept"):
        store.remove("2.0")
