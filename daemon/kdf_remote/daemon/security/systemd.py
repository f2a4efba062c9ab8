"""The hardened systemd unit of ``kdf-remote-daemon`` (rendered for the bootstrap and tests).

The daemon runs as root so it can start KDF as the unprivileged ``kdf`` user
(:mod:`.process`) and signal it; everything else root could do is taken away: the capability
bounding set keeps only what supervising a child needs, the file system is read-only except the
listed paths, and the kernel, devices, namespaces and other address families are out of reach.
KDF inherits the sandbox (it is a child in the same cgroup), so ``MemoryMax``/``TasksMax`` bound
both. ``KillMode=mixed`` sends SIGTERM to the daemon only and SIGKILL to what is left after
``TimeoutStopSec``; the daemon stops KDF itself first (graceful ``stop`` RPC).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

__all__ = ["HARDENING", "DaemonUnit", "render_daemon_unit"]

HARDENING: tuple[tuple[str, str], ...] = (
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateMounts", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    # No ProtectProc=invisible: the daemon must see KDF's /proc entry (another uid) to supervise it.
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    # Not @privileged (setuid/setgroups start KDF as its user) nor @resources (its rlimits).
    ("SystemCallFilter", "~@mount @swap @reboot @raw-io @debug @cpu-emulation @obsolete @module"),
    ("SystemCallErrorNumber", "EPERM"),
    # Start KDF as its user, signal it, hand it its files. A port below 1024 would also need
    # CAP_NET_BIND_SERVICE; the daemon's default port (8000) does not.
    (
        "CapabilityBoundingSet",
        "CAP_SETUID CAP_SETGID CAP_KILL CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE",
    ),
    ("AmbientCapabilities", ""),
    ("UMask", "0077"),
    ("KillMode", "mixed"),
)
"""Directives applied to the unit, in order (``SystemCallFilter`` twice: allow, then deny)."""


class DaemonUnit(msgspec.Struct, frozen=True, kw_only=True):
    """What varies between installs."""

    exec_path: Path = Path("/usr/local/bin/kdf-remote-daemon")
    config_path: Path = Path("/etc/kdf-remote/daemon.yaml")
    state_dir: Path = Path("/var/lib/kdf-remote")
    kdf_data_dir: Path = Path("/var/lib/kdf")
    kdf_binary_dir: Path = Path("/usr/local/lib/kdf-remote/kdf")
    """Where ``POST /v1/kdf/update`` swaps binaries (must be writable)."""
    memory_max: str = "8G"
    tasks_max: int = 512
    limit_nofile: int = 65536
    stop_timeout_s: int = 30


def render_daemon_unit(unit: DaemonUnit) -> str:
    """The text of ``kdf-remote-daemon.service``."""
    rw = " ".join(str(p) for p in (unit.state_dir, unit.kdf_data_dir, unit.kdf_binary_dir))
    lines = [
        "[Unit]",
        "Description=kdf-remote daemon (supervises the Komodo DeFi Framework)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={unit.exec_path} --config {unit.config_path}",
        "Restart=on-failure",
        "RestartSec=2s",
        f"TimeoutStopSec={unit.stop_timeout_s}s",
        f"ReadWritePaths={rw}",
        f"MemoryMax={unit.memory_max}",
        f"TasksMax={unit.tasks_max}",
        f"LimitNOFILE={unit.limit_nofile}",
        *(f"{name}={value}" for name, value in HARDENING),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)
