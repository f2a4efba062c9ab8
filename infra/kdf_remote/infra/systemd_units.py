"""Render the hardened systemd units and the polkit rule that lets the daemon drive KDF units.

Process model (style-and-security B4, "KillMode matters"): the daemon runs in
``kdf-remote-daemon.service``; each KDF instance runs in its own ``kdf-remote-kdf@<name>.service``
as the unprivileged ``kdf`` user. KDF is therefore not in the daemon's control group, and the
daemon unit keeps the default ``KillMode=control-group``: a daemon restart or upgrade stops only
the daemon, which re-adopts the running KDF. The daemon may start, stop and restart exactly the
``kdf-remote-kdf@*`` units through polkit, nothing else.

Both units are checked in CI with ``systemd-analyze verify`` and scored with
``systemd-analyze security --offline=true``.
"""

from __future__ import annotations

import json

from kdf_remote.infra.layout import DAEMON_UNIT, KDF_UNIT_TEMPLATE, Layout
from kdf_remote.infra.settings import Settings

__all__ = [
    "DAEMON_UNIT",
    "KDF_UNIT_TEMPLATE",
    "render_daemon_unit",
    "render_kdf_unit",
    "render_polkit_rule",
]

# Shared sandbox of both units. Each line is a systemd.exec(5) directive from the B4 table.
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
    """``kdf-remote-daemon.service``: the REST daemon, sandboxed, as ``kdf-remote``."""
    del settings  # the unit is the same for every stack; kept for a uniform renderer signature
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
SupplementaryGroups={layout.kdf_user}
ExecStart={layout.daemon_bin} --config {layout.daemon_config}
Restart=on-failure
RestartSec=2s
# KDF runs in its own kdf-remote-kdf@ units, so the default control-group kill mode reaches only
# the daemon: a daemon restart or upgrade leaves KDF running for re-adoption.
KillMode=control-group
TimeoutStopSec=30s
StateDirectory={layout.state_dir.name}
StateDirectoryMode=0700
LogsDirectory={layout.log_dir.name}
LogsDirectoryMode=0750
# The updater swaps the KDF binary here; everything else stays read-only.
ReadWritePaths={layout.kdf_bin_dir}
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# The daemon samples KDF's /proc entries and system memory, and reads KDF's logs through the
# kdf group: no ProtectProc/ProcSubset and no private user namespace here.
PrivateUsers=no
UMask=0077
MemoryDenyWriteExecute=yes
LimitNOFILE=65536
TasksMax=512
{_SANDBOX}
[Install]
WantedBy=multi-user.target
"""


def render_kdf_unit(settings: Settings, layout: Layout) -> str:
    """``kdf-remote-kdf@.service``: one KDF instance per ``%i``, as the ``kdf`` user.

    The daemon writes the instance's startup config (0600) to
    ``<state_dir>/instances/%i/MM2.json``; systemd hands it to KDF as a credential, so the
    ``kdf`` user never needs read access to the daemon's state directory. KDF takes SIGINT as its
    graceful stop (kdf-facts 3.4).
    """
    del settings
    instance_dir = layout.state_dir / "instances" / "%i"
    return f"""\
[Unit]
Description=KDF instance %i (supervised by kdf-remote)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={layout.kdf_user}
Group={layout.kdf_user}
ExecStart={layout.kdf_binary}
LoadCredential=MM2.json:{instance_dir}/MM2.json
Environment=MM_CONF_PATH=%d/MM2.json
Environment=MM_LOG={layout.log_dir}/kdf/%i/kdf.log
EnvironmentFile=-{instance_dir}/kdf.env
WorkingDirectory={layout.kdf_data_dir}/%i
StateDirectory={layout.kdf_data_dir.name}/%i
StateDirectoryMode=0700
LogsDirectory={layout.log_dir.name}/kdf/%i
LogsDirectoryMode=0750
# The daemon restarts KDF with its own backoff; systemd restarting it too would double count.
Restart=no
KillSignal=SIGINT
TimeoutStopSec=30s
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
PrivateUsers=yes
ProtectProc=invisible
ProcSubset=pid
# Group-readable logs: the daemon reads and redacts them through its kdf supplementary group.
UMask=0027
MemoryDenyWriteExecute=yes
LimitNOFILE=65536
TasksMax=256
{_SANDBOX}"""


def render_polkit_rule(layout: Layout) -> str:
    """A polkit rule letting the daemon's user manage only ``kdf-remote-kdf@*.service``."""
    prefix = KDF_UNIT_TEMPLATE.split("@")[0] + "@"
    return f"""\
// Written by kdf-remote: the daemon may start, stop and restart its KDF instance units only.
polkit.addRule(function(action, subject) {{
    if (action.id == "org.freedesktop.systemd1.manage-units" &&
        subject.user == {json.dumps(layout.daemon_user)}) {{
        var unit = action.lookup("unit") || "";
        var verb = action.lookup("verb") || "";
        if (unit.indexOf({json.dumps(prefix)}) == 0 &&
            ["start", "stop", "restart"].indexOf(verb) >= 0) {{
            return polkit.Result.YES;
        }}
    }}
}});
"""


def unit_names() -> tuple[str, str]:
    """The daemon unit and the KDF template unit file names."""
    return DAEMON_UNIT, KDF_UNIT_TEMPLATE
