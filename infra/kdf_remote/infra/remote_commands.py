"""The shell commands ``pulumi up`` runs over SSH, rendered as plain strings.

Secrets never appear in these strings (they are stored in the stack state as command inputs and
end up in the remote process's argv): secret content always travels on the command's stdin.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Literal

from kdf_remote.infra.layout import DAEMON_UNIT, Layout

__all__ = [
    "ServiceManager",
    "as_root",
    "certbot_command",
    "health_wait_command",
    "install_command",
    "restart_command",
    "systemd_probe",
    "write_file_command",
]

ServiceManager = Literal["auto", "systemd", "none"]
"""``auto`` detects systemd on the server; ``none`` always uses the supervise.sh fallback (an
install into a directory tree must never touch the host's systemd)."""

HEALTH_TIMEOUT_S = 300
CLOUD_INIT_WAIT_S = 1200


def as_root(script: str, ssh_user: str) -> str:
    """Run ``script`` with ``sh`` as root: directly for root, through ``sudo -n`` otherwise."""
    command = "sh -c " + shlex.quote(script)
    return command if ssh_user == "root" else "sudo -n " + command


def systemd_probe(manager: ServiceManager) -> str:
    """A shell condition that is true when the daemon is to be run by systemd."""
    return {
        "auto": "[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1",
        "systemd": "true",
        "none": "false",
    }[manager]


def install_command(ssh_user: str) -> str:
    """Run the install script arriving on stdin, after cloud-init's own run has finished.

    Waiting matters on a fresh cloud server: cloud-init may still hold the dpkg lock and be
    running the same script from user data.
    """
    # Only a host where cloud-init runs this boot has /run/cloud-init; elsewhere (an existing
    # host with the package installed but unused) `status --wait` would wait forever.
    script = (
        "if [ -d /run/cloud-init ] && command -v cloud-init >/dev/null 2>&1; then "
        f"timeout {CLOUD_INIT_WAIT_S} cloud-init status --wait >/dev/null 2>&1 </dev/null || true; "
        "fi; exec sh -s"
    )
    return as_root(script, ssh_user)


def write_file_command(
    path: PurePosixPath,
    *,
    mode: str,
    owner: str,
    ssh_user: str,
    base64: bool = False,
    manage_owner: bool = True,
) -> str:
    """Atomically replace ``path`` with stdin (base64-decoded when asked), with mode and owner.

    The temporary file is created under ``umask 077`` in the target directory, so the content is
    never readable by anyone else, not even for a moment, and the rename is atomic.
    """
    decode = "base64 -d" if base64 else "cat"
    target = shlex.quote(str(path))
    lines = [
        "set -eu",
        "umask 077",
        f"mkdir -p {shlex.quote(str(path.parent))}",
        f"tmp=$(mktemp {shlex.quote(str(path))}.XXXXXX)",
        "trap 'rm -f \"$tmp\"' EXIT",
        f'{decode} > "$tmp"',
    ]
    if manage_owner:
        lines.append(f'chown {shlex.quote(owner)} "$tmp"')
    lines += [f'chmod {mode} "$tmp"', f'mv -f "$tmp" {target}', "trap - EXIT"]
    return as_root("\n".join(lines), ssh_user)


def restart_command(
    layout: Layout, ssh_user: str, *, service_manager: ServiceManager = "auto"
) -> str:
    """(Re)start the daemon so it reads the delivered config and secrets.

    The delivered files are first checked with ``kdf-remote-daemon check-config`` as the daemon
    user, so a config or key the daemon would refuse fails ``pulumi up`` here, with the daemon's
    own message, instead of as a health-check timeout.

    With systemd the unit is restarted (KDF, in its own session, keeps running and is re-adopted).
    Without systemd the supervise script is (re)launched in the background as the daemon user;
    its pid is kept next to the daemon's state.
    """
    pidfile = shlex.quote(str(layout.state_dir / "supervise.pid"))
    supervise = shlex.quote(str(layout.supervise_script))
    log = shlex.quote(str(layout.log_dir / "daemon.out"))
    user = shlex.quote(layout.daemon_user)
    daemon = shlex.quote(str(layout.daemon_bin))
    config = shlex.quote(str(layout.daemon_config))
    script = f"""set -eu
runuser -u {user} -- {daemon} check-config {config} >&2 \\
    || {{ echo 'kdf-remote: the daemon refuses the delivered configuration' >&2; exit 1; }}
if {systemd_probe(service_manager)}; then
    systemctl daemon-reload
    systemctl enable {DAEMON_UNIT} >/dev/null
    systemctl restart {DAEMON_UNIT}
else
    if [ -f {pidfile} ] && kill -0 "$(cat {pidfile})" 2>/dev/null; then
        kill -TERM "$(cat {pidfile})"
        i=0
        while kill -0 "$(cat {pidfile})" 2>/dev/null && [ $i -lt 60 ]; do
            sleep 0.5; i=$((i+1))
        done
    fi
    runuser -u {user} -- sh -c 'nohup "$0" >>"$1" 2>&1 </dev/null & echo $!' \\
        {supervise} {log} > {pidfile}
fi"""
    return as_root(script, ssh_user)


def health_wait_command(
    *,
    public_host: str,
    port: int,
    ca_file: PurePosixPath | None,
    timeout_s: int = HEALTH_TIMEOUT_S,
) -> str:
    """Poll ``/v1/health`` over TLS on the server until it answers, or fail with the last error.

    curl connects to 127.0.0.1 but verifies the certificate for ``public_host`` (``--resolve``),
    so a pass proves the certificate clients will see carries the right name. ``ca_file`` is the
    private CA; None means the system trust store (Let's Encrypt).
    """
    url = f"https://{public_host}:{port}/v1/health"
    resolve = f"{public_host}:{port}:127.0.0.1"
    ca = f"--cacert {shlex.quote(str(ca_file))} " if ca_file is not None else ""
    return f"""set -u
deadline=$(( $(date +%s) + {timeout_s} ))
while :; do
    if out=$(curl -fsS --max-time 5 {ca}--resolve {shlex.quote(resolve)} \\
            {shlex.quote(url)} 2>&1); then
        printf 'kdf-remote: daemon healthy: %s\\n' "$out"
        exit 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        printf 'kdf-remote: the daemon did not answer %s within {timeout_s}s: %s\\n' \\
            {shlex.quote(url)} "$out" >&2
        exit 1
    fi
    sleep 2
done"""


def certbot_command(*, fqdn: str, email: str, layout: Layout, ssh_user: str) -> str:
    """Obtain (or keep) the Let's Encrypt certificate for ``fqdn``; the deploy hook installs it.

    DNS may take a little while to point at a fresh server, so issuance is retried.
    """
    hook = shlex.quote(str(layout.letsencrypt_hook))
    script = f"""set -u
i=0
until certbot certonly --standalone --non-interactive --agree-tos --keep-until-expiring \\
        -m {shlex.quote(email)} -d {shlex.quote(fqdn)} --deploy-hook {hook}; do
    i=$((i+1))
    if [ $i -ge 10 ]; then echo 'kdf-remote: Let'"'"'s Encrypt issuance failed' >&2; exit 1; fi
    sleep 30
done
# A certificate kept from an earlier run did not trigger the hook: install it now.
RENEWED_LINEAGE=/etc/letsencrypt/live/{shlex.quote(fqdn)} {hook}"""
    return as_root(script, ssh_user)
