"""Where kdf-remote puts things on a server, and who owns them.

One :class:`Layout` feeds every renderer (daemon config, systemd units, bootstrap script, secret
delivery), so a path is spelled once. ``Layout.under(root)`` re-roots every path below a
directory: the bootstrap's live test installs into a temporary root that way, and the rendered
daemon config then points inside that root too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import PurePosixPath

__all__ = ["DAEMON_UNIT", "Layout"]

_ROOT = PurePosixPath("/")

DAEMON_UNIT = "kdf-remote-daemon.service"
"""The one unit: the daemon, and the KDF processes it spawns (see :mod:`.systemd_units`)."""


@dataclass(frozen=True)
class Layout:
    """Absolute paths and the account the daemon (and the KDF it spawns) runs as."""

    root: PurePosixPath = _ROOT
    daemon_user: str = "kdf-remote"
    config_dir: PurePosixPath = _ROOT / "etc/kdf-remote"
    daemon_config: PurePosixPath = _ROOT / "etc/kdf-remote/daemon.yaml"
    tls_dir: PurePosixPath = _ROOT / "etc/kdf-remote/tls"
    tls_cert: PurePosixPath = _ROOT / "etc/kdf-remote/tls/server.crt"
    tls_key: PurePosixPath = _ROOT / "etc/kdf-remote/tls/server.key"
    tls_ca: PurePosixPath = _ROOT / "etc/kdf-remote/tls/ca.pem"
    secrets_dir: PurePosixPath = _ROOT / "etc/kdf-remote/secrets"
    jwt_key: PurePosixPath = _ROOT / "etc/kdf-remote/secrets/jwt.key"
    state_dir: PurePosixPath = _ROOT / "var/lib/kdf-remote"
    kdf_data_dir: PurePosixPath = _ROOT / "var/lib/kdf"
    log_dir: PurePosixPath = _ROOT / "var/log/kdf-remote"
    opt_dir: PurePosixPath = _ROOT / "opt/kdf-remote"
    venv: PurePosixPath = _ROOT / "opt/kdf-remote/venv"
    kdf_bin_dir: PurePosixPath = _ROOT / "opt/kdf-remote/bin"
    kdf_binary: PurePosixPath = _ROOT / "opt/kdf-remote/bin/kdf"
    lib_dir: PurePosixPath = _ROOT / "usr/local/lib/kdf-remote"
    install_script: PurePosixPath = _ROOT / "usr/local/lib/kdf-remote/install.sh"
    supervise_script: PurePosixPath = _ROOT / "usr/local/lib/kdf-remote/supervise.sh"
    marker: PurePosixPath = _ROOT / "var/lib/kdf-remote/.bootstrap"
    unit_dir: PurePosixPath = _ROOT / "etc/systemd/system"
    letsencrypt_hook: PurePosixPath = _ROOT / "etc/letsencrypt/renewal-hooks/deploy/kdf-remote.sh"

    @property
    def daemon_bin(self) -> PurePosixPath:
        """The daemon entry point inside the virtualenv."""
        return self.venv / "bin" / "kdf-remote-daemon"

    def under(self, root: str) -> Layout:
        """The same layout with every path moved below ``root`` (for installs into a tree)."""
        base = PurePosixPath(root)
        if not base.is_absolute():
            raise ValueError(f"root must be an absolute path, got {root!r}")
        moved = {
            f.name: base / getattr(self, f.name).relative_to("/")
            for f in fields(self)
            if isinstance(getattr(self, f.name), PurePosixPath) and f.name != "root"
        }
        return replace(self, root=base, **moved)

    @property
    def is_rooted(self) -> bool:
        """True when installing into a directory tree rather than the real ``/``."""
        return self.root != PurePosixPath("/")
