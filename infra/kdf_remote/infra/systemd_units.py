"""Render the hardened systemd unit of the daemon, the only unit kdf-remote installs.

Process model: the daemon runs in ``kdf-remote-daemon.service`` as the unprivileged
``kdf-remote`` user and spawns each KDF instance itself, as a child in its own session and
process group (the supervisor's ``spawn``); it never calls systemctl. KDF therefore shares the
unit's sandbox, user and control group, so every directive below (and ``TasksMax``,
``LimitNOFILE``) bounds KDF too.

``KillMode=process`` is what lets KDF outlive a daemon restart or upgrade: systemd signals only
the daemon, KDF keeps running in the unit's control group, and the next daemon start re-adopts it
by pid and start time. systemd.kill(5) discourages ``process`` because leftover processes escape
the unit's stop; here that is the intent, and stopping KDF is the daemon's own path
(``kdf-remote stop <instance>``: stop RPC, SIGINT, SIGKILL; or ``--stop-instances-on-exit``).

The unit is checked in CI with ``systemd-analyze verify`` and scored with
``systemd-analyze security --offline=true``.
"""

from __future__ import annotations

from kdf_remote.infra.layout import DAEMON_UNIT, Layout
from kdf_remote.infra.settings import Settings

__all__ = ["DAEMON_UNIT", "TASKS_PER_PROCESS", "render_daemon_unit"]

TASKS_PER_PROCESS = 256
"""Threads allowed per process in the unit: the daemon and each KDF (tokio worker threads plus
its blocking pool)."""

# Each line is a systemd.exec(5) directive from the style-and-security B4 table.
_SANDBOX = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
PrivateMounts=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @obsolete
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
DevicePolicy=closed
KeyringMode=private
"""


def render_daemon_unit(settings: Settings, layout: Layout) -> str:
    """``kdf-remote-daemon.service``: the REST daemon and the KDF it supervises, sandboxed."""
    # One budget for the daemon and every KDF instance (main + workers) in the cgroup.
    tasks_max = TASKS_PER_PROCESS * (settings.max_workers + 2)
    return f"""\
[Unit]
Description=kdf-remote daemon (supervises KDF and serves its REST API)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=exec
User={layout.daemon_user}
Group={layout.daemon_user}
ExecStart={layout.daemon_bin} --config {layout.daemon_config}
Restart=on-failure
RestartSec=2s
# KDF is the daemon's child in its own session, not a unit of its own. Stop and restart signal
# the daemon only; KDF keeps running and the next start re-adopts it (pid + start time). KDF is
# stopped through the daemon: `kdf-remote stop <instance>`, or --stop-instances-on-exit.
KillMode=process
TimeoutStopSec=30s
# The daemon's state (configs 0600, keys, audit log) and KDF's data directory.
StateDirectory={layout.state_dir.name} {layout.kdf_data_dir.name}
StateDirectoryMode=0700
LogsDirectory={layout.log_dir.name}
LogsDirectoryMode=0750
# The updater swaps the KDF binary here; everything else stays read-only.
ReadWritePaths={layout.kdf_bin_dir}
# AF_NETLINK: KDF's libp2p watches the host's interfaces through rtnetlink.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# KDF runs as this same user, so the daemon still sees its /proc entry; other users' are hidden.
ProtectProc=invisible
UMask=0077
MemoryDenyWriteExecute=yes
LimitNOFILE=65536
TasksMax={tasks_max}
{_SANDBOX}
[Install]
WantedBy=multi-user.target
"""
