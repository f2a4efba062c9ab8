"""Which user KDF runs as: never root.

When the daemon runs as root (a manual install; the bootstrap's unit runs it unprivileged), KDF
is started as the unprivileged ``kdf`` user: a compromise of KDF (which parses peer-to-peer
traffic) then cannot read the daemon's JWT key, keys file, TLS key or audit log, all 0600 and
owned by root. When the daemon already runs unprivileged, KDF runs as the same user.
"""

from __future__ import annotations

import functools
import logging
import os
import pwd
from typing import Final

import msgspec

from kdf_remote.daemon.security.errors import SecurityConfigError

__all__ = ["DEFAULT_KDF_USER", "RunAs", "kdf_user", "resolve_run_as"]

DEFAULT_KDF_USER: Final = "kdf"
_log = logging.getLogger("kdf_remote.daemon.security")


class RunAs(msgspec.Struct, frozen=True, kw_only=True):
    """The identity to start KDF under.

    Pass to ``subprocess.Popen``/``asyncio.create_subprocess_exec`` as
    ``user=run_as.uid, group=run_as.gid, extra_groups=[]`` (no supplementary groups inherited
    from root), and ``chown`` KDF's data directory to it.
    """

    user: str
    uid: int
    gid: int
    home: str


def resolve_run_as(user: str = DEFAULT_KDF_USER, *, euid: int | None = None) -> RunAs | None:
    """The user KDF must run as, or None when the daemon is unprivileged (KDF inherits it).

    Raises:
        SecurityConfigError: the daemon is root and ``user`` does not exist or is root itself.
    """
    effective = os.geteuid() if euid is None else euid
    if effective != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SecurityConfigError(
            "kdf user",
            user,
            "an existing unprivileged account (e.g. `useradd --system --no-create-home "
            f"--shell /usr/sbin/nologin {user}`); KDF is never run as root",
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SecurityConfigError("kdf user", user, "an account whose uid and gid are not 0")
    return RunAs(user=user, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


@functools.cache
def kdf_user(configured: str | None, *, euid: int | None = None) -> str | None:
    """The account to put in ``InstanceSpec.user`` for ``kdf.run_as = configured``.

    None when the daemon is unprivileged (KDF inherits its user). As root: the configured
    account, which must exist (:func:`resolve_run_as` raises otherwise); with nothing configured,
    ``kdf`` when it exists, else None after a warning that KDF will run as root.
    """
    effective = os.geteuid() if euid is None else euid
    if effective != 0:
        return None
    if configured is not None:
        run_as = resolve_run_as(configured, euid=effective)
        return run_as.user if run_as is not None else None
    try:
        run_as = resolve_run_as(DEFAULT_KDF_USER, euid=effective)
    except SecurityConfigError:
        _log.warning(
            "kdf.run_as: the daemon runs as root and no %r account exists, so KDF runs as root "
            "too; create the account or set kdf.run_as to an unprivileged user",
            DEFAULT_KDF_USER,
        )
        return None
    return run_as.user if run_as is not None else None
