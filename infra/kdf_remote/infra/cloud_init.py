"""Render a cloud server's user data: a ``#cloud-config`` document, free of secrets.

cloud-init's own modules install the OS packages and create the unprivileged ``kdf-remote`` user
(the daemon and the KDF it spawns run as it); the install script (see
:mod:`kdf_remote.infra.bootstrap_script`) travels in ``write_files`` and runs from ``runcmd`` to
build the virtualenv, install the verified KDF binary, the first-boot daemon config and the
hardened unit. Secrets arrive later over SSH, so user data, which any process
on the instance can read from the metadata service, never holds one.
"""

from __future__ import annotations

import gzip

import yaml

from kdf_remote.infra.bootstrap_script import BootstrapInput, os_packages, render_install_script

__all__ = ["gzip_user_data", "render_cloud_config"]


def render_cloud_config(data: BootstrapInput, *, ssh_public_keys: tuple[str, ...] = ()) -> str:
    """The ``#cloud-config`` text for one server."""
    layout = data.layout
    script = render_install_script(data)
    nologin = "/usr/sbin/nologin"
    document: dict[str, object] = {
        "package_update": True,
        "package_upgrade": False,
        "packages": list(os_packages(data.settings)),
        "users": [
            "default",
            {
                "name": layout.daemon_user,
                "system": True,
                "shell": nologin,
                "lock_passwd": True,
                "no_create_home": True,
                "homedir": "/nonexistent",
            },
        ],
        "ssh_pwauth": False,
        "write_files": [
            {
                "path": str(layout.install_script),
                "owner": "root:root",
                "permissions": "0700",
                "content": script,
            }
        ],
        "runcmd": [["sh", str(layout.install_script)]],
    }
    if ssh_public_keys:
        document["ssh_authorized_keys"] = list(ssh_public_keys)
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=1000)


def gzip_user_data(text: str) -> bytes:
    """Deterministically gzip user data (cloud-init unpacks it; AWS caps raw user data at 16 KB).

    ``mtime=0`` keeps the bytes stable across runs, so an unchanged config does not look like a
    change to Pulumi.
    """
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)
