"""Install KDF releases side by side and switch between them atomically.

Layout under ``bin_dir``::

    releases/<version>/kdf            the binary (an ``mm2`` in the zip is renamed)
    releases/<version>/release.json   version, sha256, source, install time
    current -> releases/<version>     what instances run: ``<bin_dir>/current/kdf``
    previous -> releases/<version>    what a rollback switches back to

Nothing under ``current`` changes until a download has been verified: the zip must come from an
allow-listed origin (scheme, host and port), redirects may not leave that origin, the size is
capped while streaming, the sha256 of the whole zip must match the pinned one, and the archive must
hold exactly one regular file named ``kdf`` or ``mm2`` with a safe path. Only then is the release
unpacked into a staging directory and renamed into ``releases/``; :meth:`ReleaseStore.switch`
replaces the ``current`` symlink with ``os.replace`` of a new symlink, so a reader sees either the
old or the new release, never neither. A running KDF keeps the binary it was started from.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import shutil
import stat
import subprocess
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
import msgspec

__all__ = [
    "BINARY_NAME",
    "BadArchiveError",
    "ChecksumMismatchError",
    "DownloadPolicy",
    "DownloadRefusedError",
    "InstalledRelease",
    "Origin",
    "OriginNotAllowedError",
    "ReleaseConfigError",
    "ReleaseConflictError",
    "ReleaseError",
    "ReleaseSpec",
    "ReleaseStore",
    "Switch",
    "UnknownReleaseError",
    "download",
    "extract_binary",
    "parse_origin",
    "smoke_test",
]

BINARY_NAME = "kdf"
LEGACY_BINARY_NAME = "mm2"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_REPORTED_VERSION_RE = re.compile(r"Komodo DeFi Framework:?\s+(\S+)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 16
_STAGING_PREFIX = ".staging-"


class ReleaseError(Exception):
    """A release could not be installed or switched; the current release is unchanged."""


class ReleaseConfigError(ReleaseError, ValueError):
    """A release spec or download policy field is invalid (names the field and the value).

    A ValueError, so ``msgspec`` decoding of a request body reports it as a validation error.
    """


class OriginNotAllowedError(ReleaseError):
    """The URL (or a redirect) points outside the allow-listed origins."""


class DownloadRefusedError(ReleaseError):
    """The server answered in a way we do not accept (status, size, too many redirects)."""


class ChecksumMismatchError(ReleaseError):
    """The downloaded zip does not have the pinned sha256."""


class BadArchiveError(ReleaseError):
    """The zip is corrupt or does not hold exactly one safe ``kdf``/``mm2`` binary."""


class ReleaseConflictError(ReleaseError):
    """The version is already installed with a different sha256."""


class UnknownReleaseError(ReleaseError):
    """The version is not installed (or there is nothing to roll back to)."""


@dataclass(frozen=True, order=True)
class Origin:
    """Scheme, host and port: what the download allow-list compares."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = _DEFAULT_PORTS.get(self.scheme)
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    @classmethod
    def of(cls, url: httpx.URL) -> Origin:
        """The origin of an absolute http(s) URL."""
        scheme = url.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not url.host:
            raise OriginNotAllowedError(f"{url!s}: only absolute http(s) URLs are accepted")
        return cls(scheme, url.host.lower(), url.port or _DEFAULT_PORTS[scheme])


def parse_origin(text: str, *, field_name: str = "allowed_origins") -> Origin:
    """Parse an allow-list entry such as ``https://github.com`` or ``http://127.0.0.1:8080``."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ReleaseConfigError(f"{field_name}: {text!r} is not a URL ({exc})") from None
    if url.path not in ("", "/") or url.query or url.fragment or url.userinfo:
        raise ReleaseConfigError(f"{field_name}: {text!r} must be scheme://host[:port] only")
    try:
        return Origin.of(url)
    except OriginNotAllowedError:
        raise ReleaseConfigError(f"{field_name}: {text!r} must be an http(s) origin") from None


class ReleaseSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What to install: a version label, the zip's URL and its pinned sha256."""

    version: str
    url: str
    sha256: str

    def __post_init__(self) -> None:
        if not _VERSION_RE.match(self.version):
            raise ReleaseConfigError(
                f"version: {self.version!r} is invalid, expected 1-80 characters of "
                "[A-Za-z0-9._+-] starting with a letter or digit"
            )
        if not _SHA256_RE.match(self.sha256):
            raise ReleaseConfigError(f"sha256: {self.sha256!r} is invalid, expected 64 hex digits")
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL:
            raise ReleaseConfigError(f"url: {self.url!r} is not a URL") from None
        if url.scheme not in _DEFAULT_PORTS or not url.host or url.userinfo or url.fragment:
            raise ReleaseConfigError(
                f"url: {self.url!r} is invalid, expected an absolute http(s) URL "
                "without credentials or fragment"
            )


class DownloadPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where releases may come from and how much we accept."""

    allowed_origins: tuple[str, ...]
    max_download_bytes: int = 256 * 1024 * 1024
    max_binary_bytes: int = 512 * 1024 * 1024
    max_redirects: int = 5
    redirect_to_allowed_origins: bool = False
    """False: a redirect must stay on the origin of the URL it came from. True: it may move to
    another allow-listed origin (GitHub release assets live on a second host)."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 900.0
    smoke_timeout: float = 15.0
    """Seconds ``kdf --version`` may take in the post-unpack smoke test (0 disables the test)."""

    def __post_init__(self) -> None:
        if not self.allowed_origins:
            raise ReleaseConfigError("allowed_origins: empty, expected at least one origin")
        for text in self.allowed_origins:
            parse_origin(text)
        for name in ("max_download_bytes", "max_binary_bytes"):
            if getattr(self, name) < 1024:
                raise ReleaseConfigError(
                    f"{name}: {getattr(self, name)!r} is invalid, expected >= 1024"
                )
        if not 0 <= self.max_redirects <= 20:
            raise ReleaseConfigError(
                f"max_redirects: {self.max_redirects!r} is invalid, expected 0-20"
            )

    def origins(self) -> frozenset[Origin]:
        """The parsed allow-list."""
        return frozenset(parse_origin(text) for text in self.allowed_origins)


class InstalledRelease(msgspec.Struct, frozen=True):
    """One release under ``releases/``."""

    version: str
    sha256: str
    source: str
    """The URL it was downloaded from, query removed (signed URLs carry tokens there)."""
    installed_at: float
    binary: str
    reported_version: str | None = None
    """What ``kdf --version`` printed in the smoke test, when it printed a version."""


class Switch(msgspec.Struct, frozen=True):
    """The outcome of :meth:`ReleaseStore.switch`."""

    current: str
    previous: str | None
    changed: bool


# --------------------------------------------------------------------------- download


async def download(
    url: str,
    policy: DownloadPolicy,
    dest: Path,
    *,
    client: httpx.AsyncClient | None = None,
) -> str:
    """Stream ``url`` into ``dest`` under ``policy``; returns the sha256 hex of what was written.

    Redirects are followed by hand: each hop must stay on its origin (or, with
    ``redirect_to_allowed_origins``, reach another allow-listed origin) and may not downgrade
    https to http.
    """
    allowed = policy.origins()
    current = httpx.URL(url)
    origin = Origin.of(current)
    if origin not in allowed:
        raise OriginNotAllowedError(f"{origin} is not an allowed release origin")
    own_client = client is None
    if client is None:
        client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(
                policy.read_timeout, connect=policy.connect_timeout, pool=policy.connect_timeout
            ),
            headers={"User-Agent": "kdf-remote release installer"},
        )
    try:
        async with asyncio.timeout(policy.total_timeout):
            for _hop in range(policy.max_redirects + 1):
                target = await _fetch(client, current, policy, dest)
                if isinstance(target, str):
                    return target
                _check_redirect(current, target, allowed, policy)
                current = target
    except TimeoutError:
        raise DownloadRefusedError(
            f"download took longer than {policy.total_timeout:g} s"
        ) from None
    except httpx.HTTPError as exc:
        raise DownloadRefusedError(f"download from {Origin.of(current)} failed: {exc}") from None
    finally:
        if own_client:
            await client.aclose()
    raise DownloadRefusedError(f"more than {policy.max_redirects} redirects")


def _check_redirect(
    source: httpx.URL, target: httpx.URL, allowed: frozenset[Origin], policy: DownloadPolicy
) -> None:
    src, dst = Origin.of(source), Origin.of(target)
    if src.scheme == "https" and dst.scheme != "https":
        raise OriginNotAllowedError(f"redirect from {src} downgrades to {dst}")
    if dst == src:
        return
    if policy.redirect_to_allowed_origins and dst in allowed:
        return
    raise OriginNotAllowedError(f"redirect from {src} to another origin {dst} refused")


async def _fetch(
    client: httpx.AsyncClient, url: httpx.URL, policy: DownloadPolicy, dest: Path
) -> httpx.URL | str:
    """One hop: the redirect target, or the sha256 hex once the body was saved."""
    request = client.build_request("GET", url)
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                raise DownloadRefusedError(f"redirect {response.status_code} without Location")
            return url.join(location)
        if response.status_code != 200:
            raise DownloadRefusedError(f"{Origin.of(url)} answered HTTP {response.status_code}")
        declared = response.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > policy.max_download_bytes
        ):
            raise DownloadRefusedError(
                f"release is {declared} bytes, above the cap of {policy.max_download_bytes}"
            )
        return await _save(response, dest, policy.max_download_bytes)
    finally:
        await response.aclose()


async def _save(response: httpx.Response, dest: Path, cap: int) -> str:
    written = 0
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        # aiter_bytes decodes any Content-Encoding, so the cap also bounds a compression bomb.
        async for chunk in response.aiter_bytes(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise DownloadRefusedError(f"release exceeds the cap of {cap} bytes")
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- unpack


def _member_is_safe(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return False
    if re.match(r"^[A-Za-z]:", name):
        return False
    return ".." not in PurePosixPath(name).parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_binary(archive: Path, dest_dir: Path, *, max_bytes: int) -> str:
    """Unpack the single ``kdf``/``mm2`` of ``archive`` as ``dest_dir/kdf`` (0755).

    Returns the member's name in the zip. Every member is checked first: no absolute or ``..``
    paths, no symlinks, exactly one regular file, named ``kdf`` or ``mm2``. The output path never
    comes from the archive.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                if not _member_is_safe(info):
                    raise BadArchiveError(f"unsafe path in archive: {info.filename!r}")
                if _is_symlink(info):
                    raise BadArchiveError(f"symlink in archive: {info.filename!r}")
            files = [info for info in infos if not info.is_dir()]
            if len(files) != 1:
                names = ", ".join(repr(i.filename) for i in files[:5]) or "nothing"
                raise BadArchiveError(f"expected a single kdf or mm2 binary, found {names}")
            member = files[0]
            if PurePosixPath(member.filename).name not in (BINARY_NAME, LEGACY_BINARY_NAME):
                raise BadArchiveError(f"expected a kdf or mm2 binary, found {member.filename!r}")
            if member.file_size > max_bytes:
                raise BadArchiveError(f"binary is {member.file_size} bytes, above {max_bytes}")
            try:
                _copy_member(zf, member, dest_dir / BINARY_NAME, max_bytes)
            except BaseException:
                (dest_dir / BINARY_NAME).unlink(missing_ok=True)
                raise
            return member.filename
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # A bad CRC raises BadZipFile, broken deflate data zlib.error, a truncated member EOFError.
        raise BadArchiveError(f"not a valid zip archive: {exc}") from None


def _copy_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, cap: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    written = 0
    with os.fdopen(fd, "wb") as out, zf.open(member) as src:
        # zipfile verifies the CRC at the end of the stream; counting guards a lying header.
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            written += len(chunk)
            if written > cap:
                raise BadArchiveError(f"binary inflates beyond {cap} bytes")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    target.chmod(0o755)


def smoke_test(binary: Path, timeout: float) -> str | None:
    """Run ``binary --version``: it must exec and exit in time; returns the version it printed.

    Catches a binary built for another architecture or a truncated file before any instance is
    touched. A non-zero exit is tolerated (old ``mm2`` builds read argv[1] as config JSON).
    """
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=binary.parent,
            env={"PATH": os.defpath},
        )
    except subprocess.TimeoutExpired:
        raise BadArchiveError(
            f"{binary.name} --version did not exit within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise BadArchiveError(f"{binary.name} cannot be executed on this host: {exc}") from None
    match = _REPORTED_VERSION_RE.search(done.stdout.decode(errors="replace"))
    return match.group(1) if match else None


# --------------------------------------------------------------------------- the store


class ReleaseStore:
    """KDF releases installed under ``bin_dir`` and the ``current``/``previous`` symlinks."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.releases_dir = bin_dir / "releases"
        self.current_link = bin_dir / "current"
        self.previous_link = bin_dir / "previous"

    @property
    def current_binary(self) -> Path:
        """The path instances should run (follows ``current``); set it as the spec's binary."""
        return self.current_link / BINARY_NAME

    def _ensure_dirs(self) -> None:
        self.releases_dir.mkdir(parents=True, exist_ok=True, mode=0o755)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dirs()
        fd = os.open(self.bin_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _link_version(self, link: Path) -> str | None:
        try:
            target = link.readlink()
        except OSError:
            return None
        version = PurePosixPath(target).name
        return version if (self.releases_dir / version / BINARY_NAME).is_file() else None

    def current_version(self) -> str | None:
        """The version ``current`` points at, or None before the first switch."""
        return self._link_version(self.current_link)

    def previous_version(self) -> str | None:
        """The version a rollback would switch back to."""
        return self._link_version(self.previous_link)

    def get(self, version: str) -> InstalledRelease | None:
        """The installed release ``version``, or None."""
        if not _VERSION_RE.match(version):
            return None
        meta = self.releases_dir / version / "release.json"
        try:
            return msgspec.json.decode(meta.read_bytes(), type=InstalledRelease)
        except (OSError, msgspec.DecodeError):
            return None

    def installed(self) -> list[InstalledRelease]:
        """Every installed release, oldest first."""
        if not self.releases_dir.is_dir():
            return []
        found = [self.get(p.name) for p in self.releases_dir.iterdir() if p.is_dir()]
        return sorted((r for r in found if r is not None), key=lambda r: r.installed_at)

    async def install(
        self,
        spec: ReleaseSpec,
        policy: DownloadPolicy,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> InstalledRelease:
        """Download, verify and unpack ``spec`` into ``releases/<version>``. Does not switch.

        Installing a version that is already there with the same sha256 returns it without a
        download; with another sha256 it raises :class:`ReleaseConflictError`.
        """
        existing = self.get(spec.version)
        if existing is not None:
            return _same_or_conflict(existing, spec.sha256)
        self._ensure_dirs()
        self._remove_stale_staging()
        staging = self.releases_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir(mode=0o700)
        try:
            archive = staging / "download.zip"
            actual = await download(spec.url, policy, archive, client=client)
            if not hmac.compare_digest(actual, spec.sha256.lower()):
                raise ChecksumMismatchError(
                    f"sha256 mismatch for {spec.version}: expected {spec.sha256.lower()}, "
                    f"got {actual}"
                )
            release = await asyncio.to_thread(self._unpack, spec, policy, staging, archive)
            return await asyncio.to_thread(self._commit, staging, release)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _unpack(
        self, spec: ReleaseSpec, policy: DownloadPolicy, staging: Path, archive: Path
    ) -> InstalledRelease:
        unpacked = staging / "release"
        unpacked.mkdir()
        extract_binary(archive, unpacked, max_bytes=policy.max_binary_bytes)
        archive.unlink()
        reported = None
        if policy.smoke_timeout > 0:
            reported = smoke_test(unpacked / BINARY_NAME, policy.smoke_timeout)
        url = httpx.URL(spec.url)
        return InstalledRelease(
            version=spec.version,
            sha256=spec.sha256.lower(),
            source=str(url.copy_with(query=None)),
            installed_at=time.time(),
            binary=str(self.releases_dir / spec.version / BINARY_NAME),
            reported_version=reported,
        )

    def _commit(self, staging: Path, release: InstalledRelease) -> InstalledRelease:
        unpacked = staging / "release"
        _write_file(unpacked / "release.json", msgspec.json.encode(release), 0o644)
        unpacked.chmod(0o755)
        with self._locked():
            existing = self.get(release.version)
            if existing is not None:
                return _same_or_conflict(existing, release.sha256)
            unpacked.rename(self.releases_dir / release.version)
            _fsync_dir(self.releases_dir)
        return release

    def _remove_stale_staging(self, max_age: float = 3600.0) -> None:
        # A crash mid-install leaves a staging dir behind; a concurrent install's is young.
        now = time.time()
        for path in self.releases_dir.glob(f"{_STAGING_PREFIX}*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > max_age:
                    shutil.rmtree(path)

    def adopt(self, binary: Path, version: str) -> InstalledRelease:
        """Import an existing KDF binary (e.g. ``/usr/local/bin/kdf`` from the bootstrap) as a
        release, so a later update has something to roll back to. Does not switch."""
        if not _VERSION_RE.match(version):
            raise ReleaseConfigError(f"version: {version!r} is invalid")
        digest = _sha256_file(binary)
        existing = self.get(version)
        if existing is not None:
            return _same_or_conflict(existing, digest)
        self._ensure_dirs()
        staging = self.releases_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        (staging / "release").mkdir(parents=True, mode=0o700)
        try:
            shutil.copyfile(binary, staging / "release" / BINARY_NAME)
            (staging / "release" / BINARY_NAME).chmod(0o755)
            release = InstalledRelease(
                version=version,
                sha256=digest,
                source=str(binary),
                installed_at=time.time(),
                binary=str(self.releases_dir / version / BINARY_NAME),
            )
            return self._commit(staging, release)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def switch(self, version: str) -> Switch:
        """Make ``version`` current; the old current becomes ``previous``. Atomic per symlink."""
        with self._locked():
            if self.get(version) is None:
                raise UnknownReleaseError(f"version {version!r} is not installed")
            old = self.current_version()
            if old == version:
                return Switch(current=version, previous=self.previous_version(), changed=False)
            if old is not None:
                _replace_symlink(self.previous_link, f"releases/{old}")
            _replace_symlink(self.current_link, f"releases/{version}")
            _fsync_dir(self.bin_dir)
            return Switch(current=version, previous=old, changed=True)

    def rollback(self) -> Switch:
        """Switch back to ``previous`` (which then becomes the new ``previous``'s counterpart)."""
        target = self.previous_version()
        if target is None:
            raise UnknownReleaseError("there is no previous release to roll back to")
        return self.switch(target)

    def remove(self, version: str) -> None:
        """Delete an installed release that is neither current nor previous."""
        with self._locked():
            if version in (self.current_version(), self.previous_version()):
                raise ReleaseError(f"version {version} is current or previous and is kept")
            if self.get(version) is None:
                raise UnknownReleaseError(f"version {version!r} is not installed")
            shutil.rmtree(self.releases_dir / version)

    def prune(self, keep: int = 3) -> list[str]:
        """Remove the oldest releases beyond ``keep``, never current or previous."""
        if keep < 2:
            raise ReleaseConfigError(f"keep: {keep!r} is invalid, expected >= 2")
        protected = {self.current_version(), self.previous_version()}
        releases = self.installed()
        removable = [r.version for r in releases if r.version not in protected]
        excess = max(len(releases) - keep, 0)
        removed = removable[:excess]
        for version in removed:
            self.remove(version)
        return removed


def _same_or_conflict(existing: InstalledRelease, sha256: str) -> InstalledRelease:
    if hmac.compare_digest(existing.sha256, sha256.lower()):
        return existing
    raise ReleaseConflictError(
        f"version {existing.version} is installed with sha256 {existing.sha256}, "
        f"not {sha256.lower()}"
    )


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    tmp.symlink_to(target)
    try:
        tmp.replace(link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
