"""What an instance is: :class:`InstanceSpec` and its parts, validated once at construction.

Every timeout is a field so tests can run the whole lifecycle in milliseconds.
"""

from __future__ import annotations

import grp
import math
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from kdf_remote.supervisor.process import RunAs
from kdf_remote.supervisor.restart_policy import RestartPolicy

__all__ = ["InstanceSpec", "ResourceLimits", "RestartPolicy", "RunAs", "Timeouts"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Variables the supervisor sets itself; a spec may not override them.
RESERVED_ENV = frozenset({"MM_CONF_PATH", "MM_COINS_PATH"})
_MIB = 1024 * 1024


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{owner}.{name}: got {value!r}, expected a positive number")


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Bounded waits of one instance, in seconds."""

    start_s: float = 30.0
    """Spawn to ready (``version`` and an authenticated call answered); then a failed start."""
    stop_rpc_s: float = 10.0
    """Wait for exit after the ``stop`` RPC before SIGINT."""
    sigint_s: float = 10.0
    """Wait for exit after SIGINT before SIGKILL to the process group."""
    sigkill_s: float = 5.0
    """Wait for exit after SIGKILL; only a process stuck in the kernel outlives it."""
    probe_s: float = 2.0
    """Timeout of one readiness or health probe call."""
    rpc_s: float = 30.0
    """Default timeout of a proxied RPC call."""

    def __post_init__(self) -> None:
        _positive(
            "timeouts",
            start_s=self.start_s,
            stop_rpc_s=self.stop_rpc_s,
            sigint_s=self.sigint_s,
            sigkill_s=self.sigkill_s,
            probe_s=self.probe_s,
            rpc_s=self.rpc_s,
        )


class ResourceLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Limits applied to one KDF process (None: no limit).

    Enforced by :class:`kdf_remote.supervisor.resource_limits.LimitEnforcer` with the strongest
    mechanism of the host (cgroup v2, systemd scope, cgroup v1, or RLIMIT_AS plus an RSS
    watchdog); the instance status says which one is in force.

    * ``memory_bytes``: memory cap; a KDF killed for exceeding it exits with reason
      ``memory_limit`` and counts as a crash for the restart policy.
    * ``cpu``: cores, as a CPU quota (not enforced under the rlimit mechanism, and status says so).
    * ``open_files``: RLIMIT_NOFILE (soft and hard), in force from KDF's first instruction.
    """

    memory_bytes: int | None = None
    cpu: float | None = None
    open_files: int | None = None

    def __post_init__(self) -> None:
        if self.memory_bytes is not None and self.memory_bytes < 16 * _MIB:
            raise ValueError(
                f"limits.memory_bytes: got {self.memory_bytes!r}, expected at least 16 MiB"
            )
        if self.cpu is not None and not (0 < self.cpu <= 4096 and math.isfinite(self.cpu)):
            raise ValueError(f"limits.cpu: got {self.cpu!r}, expected a number of cores > 0")
        if self.open_files is not None and not 64 <= self.open_files <= 1 << 20:
            raise ValueError(f"limits.open_files: got {self.open_files!r}, expected 64..{1 << 20}")


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """One supervised KDF: where its binary, data and supervisor files live, and its policies.

    ``run_dir`` belongs to the supervisor alone (created 0700): it holds the active KDF config
    (``MM2.json``, 0600), the coins file, the stored config, the state file used for re-adoption
    and the log files. ``data_dir`` is KDF's working directory and, unless the config sets
    ``dbdir``, its database root.
    """

    name: str
    binary_path: Path
    data_dir: Path
    run_dir: Path
    rpc_port: int
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    log_max_bytes: int = 10 * _MIB
    """Size at which the log is rotated (copy-then-truncate)."""
    log_backups: int = 3
    """Rotated files kept (``kdf.log.1`` .. ``kdf.log.N``)."""
    log_check_interval_s: float = 1.0
    """How often log size and limits are checked."""
    health_interval_s: float = 30.0
    """How often cpu/rss/fds and the RPC round trip are sampled for status."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for KDF (on top of PATH, HOME, LANG, TZ, RUST_LOG from ours)."""
    limits: ResourceLimits | None = None
    user: str | int | None = None
    """Run KDF as this user (name or uid) when the supervisor runs as root; None: inherit ours."""
    group: str | int | None = None
    """Its group (name or gid); None: the user's primary group."""
    run_as: RunAs | None = field(init=False, default=None, compare=False)
    """``user``/``group`` resolved to ids at construction (None when neither is set)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_as", _resolve_run_as(self.user, self.group))
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name: got {self.name!r}, expected 1-63 of [A-Za-z0-9_.-], "
                "starting with a letter or digit"
            )
        if not 1024 <= self.rpc_port <= 65535:
            raise ValueError(f"rpc_port: got {self.rpc_port!r}, expected 1024..65535")
        if self.log_max_bytes < 4096:
            raise ValueError(f"log_max_bytes: got {self.log_max_bytes!r}, expected >= 4096")
        if not 0 <= self.log_backups <= 100:
            raise ValueError(f"log_backups: got {self.log_backups!r}, expected 0..100")
        _positive(
            "spec",
            log_check_interval_s=self.log_check_interval_s,
            health_interval_s=self.health_interval_s,
        )
        for key, value in self.env.items():
            if key in RESERVED_ENV or not key or "=" in key or "\0" in key + value:
                raise ValueError(f"env: {key!r} cannot be set (reserved or malformed)")
        object.__setattr__(self, "env", dict(self.env))
        for name in ("binary_path", "data_dir", "run_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    @property
    def log_path(self) -> Path:
        """The live log file KDF's stdout and stderr are appended to."""
        return self.run_dir / "kdf.log"


def _resolve_run_as(user: str | int | None, group: str | int | None) -> RunAs | None:
    if user is None and group is None:
        return None
    if user is None:
        raise ValueError(f"group: got {group!r} without a user, expected user to be set too")
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise ValueError(f"user: got {user!r}, expected an existing user name or uid") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = (grp.getgrgid(group) if isinstance(group, int) else grp.getgrnam(group)).gr_gid
        except (KeyError, OverflowError):
            raise ValueError(
                f"group: got {group!r}, expected an existing group name or gid"
            ) from None
    return RunAs(uid=entry.pw_uid, gid=gid)
