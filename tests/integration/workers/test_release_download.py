"""Installing KDF releases over HTTP from a loopback server: the verified path works, and every
refused download (checksum, corrupt zip, foreign redirect, oversize, traversal) leaves the old
binary current and nothing half-installed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from _release_fixtures import (
    ReleaseServer,
    corrupt_zip,
    release_script,
    release_zip,
    sha256,
    traversal_zip,
)
from kdf_remote.kdf.release import (
    BadArchiveError,
    ChecksumMismatchError,
    DownloadPolicy,
    DownloadRefusedError,
    OriginNotAllowedError,
    ReleaseConflictError,
    ReleaseError,
    ReleaseSpec,
    ReleaseStore,
)

pytestmark = pytest.mark.integration

OLD = "2.4.0-beta"


@pytest.fixture
def server() -> Iterator[ReleaseServer]:
    """A release server on 127.0.0.1."""
    with ReleaseServer() as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> ReleaseStore:
    """A store whose current release is OLD (adopted from a local file)."""
    source = tmp_path / "kdf-old"
    source.write_bytes(release_script(OLD))
    store = ReleaseStore(tmp_path / "bin")
    store.adopt(source, OLD)
    store.switch(OLD)
    return store


def _policy(
    server: ReleaseServer, *, max_download_bytes: int = 1 << 20, max_redirects: int = 5
) -> DownloadPolicy:
    return DownloadPolicy(
        allowed_origins=(server.origin,),
        max_download_bytes=max_download_bytes,
        max_redirects=max_redirects,
    )


def _assert_untouched(store: ReleaseStore) -> None:
    assert store.current_version() == OLD
    assert store.current_binary.read_bytes() == release_script(OLD)
    assert [r.version for r in store.installed()] == [OLD]
    assert [p.name for p in store.releases_dir.iterdir()] == [OLD]


async def test_verified_release_installs_switches_and_runs(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """A good zip is installed beside the old one; after switch, current/kdf runs the new one."""
    data = release_zip("2.5.1-beta")
    url = server.add("/kdf_a9fbf60-linux-x86-64.zip?token=secret", data)
    spec = ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data))
    installed = await store.install(spec, _policy(server))
    assert installed.reported_version == "2.5.1-beta"
    assert "token" not in installed.source
    assert store.current_version() == OLD
    switch = store.switch("2.5.1-beta")
    assert (switch.current, switch.previous) == ("2.5.1-beta", OLD)
    process = await asyncio.create_subprocess_exec(
        str(store.current_binary), "--version", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert stdout.decode().strip() == "Komodo DeFi Framework: 2.5.1-beta"


async def test_legacy_mm2_release_is_stored_as_kdf(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """A zip holding ``mm2`` installs as ``releases/<v>/kdf``."""
    data = release_zip("2.0.0-beta", binary_name="mm2")
    url = server.add("/mm2-b0fd99e84-Linux-Release.zip", data)
    await store.install(
        ReleaseSpec(version="2.0.0-beta", url=url, sha256=sha256(data)), _policy(server)
    )
    assert (store.releases_dir / "2.0.0-beta" / "kdf").is_file()
    assert not (store.releases_dir / "2.0.0-beta" / "mm2").exists()


async def test_checksum_mismatch_leaves_old_binary(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """A zip whose sha256 differs from the pinned one is refused before unpacking."""
    url = server.add("/kdf.zip", release_zip("2.5.1-beta"))
    spec = ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(b"something else"))
    with pytest.raises(ChecksumMismatchError, match="expected"):
        await store.install(spec, _policy(server))
    _assert_untouched(store)


async def test_corrupt_zip_leaves_old_binary(server: ReleaseServer, store: ReleaseStore) -> None:
    """A zip with the pinned sha256 but a broken member is refused."""
    data = corrupt_zip()
    url = server.add("/kdf.zip", data)
    with pytest.raises(BadArchiveError):
        await store.install(
            ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data)), _policy(server)
        )
    _assert_untouched(store)


async def test_path_traversal_zip_leaves_old_binary(
    server: ReleaseServer, store: ReleaseStore, tmp_path: Path
) -> None:
    """A member named ``../kdf`` is refused and nothing is written outside the store."""
    data = traversal_zip()
    url = server.add("/kdf.zip", data)
    with pytest.raises(BadArchiveError, match="unsafe path"):
        await store.install(
            ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data)), _policy(server)
        )
    _assert_untouched(store)
    assert not (store.bin_dir / "kdf").exists()
    assert not (store.releases_dir / "kdf").exists()


async def test_redirect_to_another_host_is_refused(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """A redirect to another origin is refused and the other host never sees a request."""
    data = release_zip("2.5.1-beta")
    with ReleaseServer() as elsewhere:
        target = elsewhere.add("/kdf.zip", data)
        url = server.redirect("/kdf.zip", target)
        spec = ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data))
        with pytest.raises(OriginNotAllowedError, match="another origin"):
            await store.install(spec, _policy(server))
        assert elsewhere.hits == []
    _assert_untouched(store)


async def test_same_origin_redirect_is_followed(server: ReleaseServer, store: ReleaseStore) -> None:
    """A relative redirect on the same origin is followed to the zip."""
    data = release_zip("2.5.1-beta")
    server.add("/files/kdf.zip", data)
    url = server.redirect("/latest.zip", "/files/kdf.zip", status=301)
    spec = ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data))
    await store.install(spec, _policy(server))
    assert server.hits == ["/latest.zip", "/files/kdf.zip"]


async def test_redirect_loop_is_bounded(server: ReleaseServer, store: ReleaseStore) -> None:
    """A redirect loop stops after max_redirects hops."""
    url = server.redirect("/a", "/b")
    server.redirect("/b", "/a")
    spec = ReleaseSpec(version="2.5.1-beta", url=url, sha256="0" * 64)
    with pytest.raises(DownloadRefusedError, match="more than 3 redirects"):
        await store.install(spec, _policy(server, max_redirects=3))
    assert len(server.hits) == 4
    _assert_untouched(store)


async def test_origin_not_allowed_is_refused_without_a_request(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """A URL outside the allow-list is refused before any connection is made."""
    url = server.add("/kdf.zip", release_zip("2.5.1-beta"))
    policy = DownloadPolicy(allowed_origins=("https://github.com",))
    with pytest.raises(OriginNotAllowedError, match="not an allowed"):
        await store.install(ReleaseSpec(version="2.5.1-beta", url=url, sha256="0" * 64), policy)
    assert server.hits == []
    _assert_untouched(store)


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "streamed"])
async def test_oversized_download_is_refused(
    server: ReleaseServer, store: ReleaseStore, send_length: bool
) -> None:
    """A body above max_download_bytes is refused, declared or not."""
    data = b"\0" * 300_000
    url = server.add("/big.zip", data, send_length=send_length)
    spec = ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data))
    with pytest.raises(DownloadRefusedError, match="cap"):
        await store.install(spec, _policy(server, max_download_bytes=100_000))
    _assert_untouched(store)


async def test_http_error_status_is_refused(server: ReleaseServer, store: ReleaseStore) -> None:
    """A 404 is a refused download naming the status."""
    spec = ReleaseSpec(version="2.5.1-beta", url=server.url("/missing.zip"), sha256="0" * 64)
    with pytest.raises(DownloadRefusedError, match="HTTP 404"):
        await store.install(spec, _policy(server))
    _assert_untouched(store)


async def test_same_version_other_checksum_conflicts(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """Re-installing an installed version with another sha256 is refused without a download."""
    data = release_zip(OLD)
    url = server.add("/kdf.zip", data)
    with pytest.raises(ReleaseConflictError):
        await store.install(ReleaseSpec(version=OLD, url=url, sha256=sha256(data)), _policy(server))
    assert server.hits == []


async def test_binary_that_cannot_execute_is_refused(
    server: ReleaseServer, store: ReleaseStore
) -> None:
    """A "binary" the host cannot exec (wrong format) fails the smoke test before any switch."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("kdf")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, b"\x7fELF\x02\x01\x01garbage-not-a-real-executable")
    data = buffer.getvalue()
    url = server.add("/kdf.zip", data)
    with pytest.raises(ReleaseError, match="cannot be executed"):
        await store.install(
            ReleaseSpec(version="2.5.1-beta", url=url, sha256=sha256(data)), _policy(server)
        )
    _assert_untouched(store)
