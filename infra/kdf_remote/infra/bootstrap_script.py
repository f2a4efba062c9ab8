"""Render the server's install script: one idempotent POSIX shell script, no secrets in it.

The same script runs twice on a cloud server (from cloud-init at first boot, then over SSH by
``pulumi up``, where it finds everything in place and only applies changes) and once over SSH on
an existing host. In order it:

1. checks the system requirements (OS, architecture, memory, disk, Python) and stops with one
   line per unmet requirement and exit code 2 before touching anything;
2. installs the OS packages, creates the ``kdf-remote`` system user (the daemon and the KDF
   processes it spawns run as it);
3. creates the directory tree with its owners and modes;
4. builds a virtualenv holding ``kdf-remote[daemon]`` at the pinned version;
5. downloads the pinned KDF release, verifies its sha256 and installs the binary;
6. writes the first-boot daemon config (if absent), the systemd unit and the no-systemd
   supervisor script;
7. enables the daemon unit (it is started once the secrets arrive over SSH), or, on a host
   without systemd, leaves ``supervise.sh`` to be started instead.

What the script installs where is an :class:`InstallTarget`; its defaults describe a real server.
Every path comes from a :class:`~kdf_remote.infra.layout.Layout`, so ``Layout().under("/tmp/x")``
installs into a directory tree (the SSH bootstrap test does); :class:`BootstrapSteps` switches
off the steps that need a real machine (packages, users); :class:`PipSource` installs the
virtualenv from local wheels instead of the package index.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from kdf_remote.infra.daemon_config import DaemonConfigInput, render_daemon_config
from kdf_remote.infra.layout import DAEMON_UNIT, Layout
from kdf_remote.infra.remote_commands import ServiceManager, systemd_probe
from kdf_remote.infra.settings import KdfRelease, Requirements, Settings
from kdf_remote.infra.systemd_units import render_daemon_unit

__all__ = [
    "EXIT_FAILED",
    "EXIT_REQUIREMENTS",
    "EXTRA_SITE_PTH",
    "BootstrapInput",
    "BootstrapSteps",
    "InstallTarget",
    "PipSource",
    "os_packages",
    "render_install_script",
    "render_supervise_script",
]

EXIT_FAILED = 1
EXIT_REQUIREMENTS = 2
_OS_RELEASE = PurePosixPath("/etc/os-release")
EXTRA_SITE_PTH = "kdf-remote-extra-site.pth"
"""The ``.pth`` file naming :attr:`PipSource.extra_site_dirs` inside the virtualenv."""


@dataclass(frozen=True)
class BootstrapSteps:
    """Which machine-level steps run; a directory-tree install turns off the first two."""

    packages: bool = True
    users: bool = True
    venv: bool = True
    kdf: bool = True


@dataclass(frozen=True)
class PipSource:
    """Where the server's pip finds ``kdf-remote[daemon]`` and its dependencies.

    The default is the package index. ``no_index`` + ``find_links`` install from wheels already
    on the server (an air-gapped host, or a wheel built from a checkout). ``extra_site_dirs`` are
    directories of dependencies already installed for the same Python, made importable in the
    virtualenv by a ``.pth`` file; pip then finds them satisfied and installs nothing from the
    network. The SSH bootstrap test installs this way, offline, from this checkout's wheel and
    the dependencies of the environment running the tests.
    """

    no_index: bool = False
    find_links: tuple[PurePosixPath, ...] = ()
    extra_site_dirs: tuple[PurePosixPath, ...] = ()

    def pip_options(self) -> tuple[str, ...]:
        """The ``pip install`` options this source stands for."""
        options: list[str] = ["--no-index"] if self.no_index else []
        for link in self.find_links:
            options += ["--find-links", str(link)]
        return tuple(options)


@dataclass(frozen=True)
class InstallTarget:
    """Where and how the install script installs; the defaults describe a real server."""

    layout: Layout = field(default_factory=Layout)
    steps: BootstrapSteps = field(default_factory=BootstrapSteps)
    service_manager: ServiceManager = "auto"
    os_release: PurePosixPath = _OS_RELEASE
    release: KdfRelease | None = None
    """Overrides ``settings.kdf`` (tests install a locally built zip from a file:// URL)."""
    python: str = "python3"
    """The interpreter checked against the requirements and used to create the virtualenv."""
    pip: PipSource = field(default_factory=PipSource)


@dataclass(frozen=True)
class BootstrapInput:
    """Everything the install script is rendered from."""

    settings: Settings
    target: InstallTarget = field(default_factory=InstallTarget)

    @property
    def layout(self) -> Layout:
        """The paths and account of the install."""
        return self.target.layout

    @property
    def steps(self) -> BootstrapSteps:
        """Which machine-level steps run."""
        return self.target.steps

    @property
    def kdf(self) -> KdfRelease:
        """The release this script installs."""
        return self.target.release or self.settings.kdf


def os_packages(settings: Settings) -> tuple[str, ...]:
    """Debian packages the server needs; cloud-init installs the same list at first boot."""
    packages = ["ca-certificates", "curl", "python3", "python3-venv"]
    if settings.provider == "custom" and settings.manage_firewall:
        packages.append("ufw")
    if settings.tls.mode == "letsencrypt":
        packages.append("certbot")
    return tuple(packages)


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _heredoc(path: PurePosixPath, content: str, *, only_if_absent: bool = False) -> str:
    marker = "KDF_REMOTE_EOF_" + hashlib.sha256(content.encode()).hexdigest()[:12].upper()
    if marker in content:
        raise ValueError(f"heredoc marker collides with the content of {path}")
    body = content if content.endswith("\n") else content + "\n"
    write = f"cat > {_q(path)}.new <<'{marker}'\n{body}{marker}\nmv -f {_q(path)}.new {_q(path)}"
    if only_if_absent:
        return f"if [ ! -e {_q(path)} ]; then\n{write}\nfi"
    return write


_PRELUDE = r"""
log() { printf 'kdf-remote bootstrap: %s\n' "$*"; }
fail() {
    printf 'kdf-remote bootstrap: FAILED: %s\n' "$*" >&2
    mkdir -p "$(dirname "$MARKER")" 2>/dev/null \
        && printf 'failed: %s\n' "$*" > "$MARKER" 2>/dev/null
    exit 1
}
# own PATH MODE OWNER: chmod always, chown only when this run manages users.
own() {
    chmod "$2" "$1"
    if [ "$MANAGE_USERS" = 1 ]; then chown "$3" "$1"; fi
}
dir() { mkdir -p "$1"; own "$1" "$2" "$3"; }
""".strip()


def _requirements_block(data: BootstrapInput) -> str:
    req: Requirements = data.settings.requirements
    os_release = data.target.os_release
    major, minor = req.min_python
    return f"""
check_requirements() {{
    unmet=""
    note() {{ unmet="$unmet$1
"; }}
    os_id=""; os_like=""
    if [ -r {_q(os_release)} ]; then
        os_id=$(. {_q(os_release)} && printf '%s' "${{ID:-}}")
        os_like=$(. {_q(os_release)} && printf '%s' "${{ID_LIKE:-}}")
    fi
    case " $os_id $os_like " in
        *" debian "*|*" ubuntu "*) ;;
        *) note "os: found '${{os_id:-unknown}}', need Debian 12+ or Ubuntu 24.04+" ;;
    esac
    arch=$(uname -m)
    [ "$arch" = x86_64 ] \\
        || note "architecture: found $arch, need x86_64 (KDF ships linux-x86-64 builds only)"
    mem_kb=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo 2>/dev/null || echo 0)
    mem_mb=$(( ${{mem_kb:-0}} / 1024 ))
    [ "$mem_mb" -ge {req.min_memory_mb} ] \\
        || note "memory: found $mem_mb MiB, need {req.min_memory_mb} MiB"
    probe={_q(data.layout.opt_dir)}
    while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
    disk_mb=$(( $(df -Pk "$probe" | awk 'NR==2 {{print $4}}') / 1024 ))
    [ "$disk_mb" -ge {req.min_disk_mb} ] \\
        || note "disk: found $disk_mb MiB free under $probe, need {req.min_disk_mb} MiB"
    if command -v "$PYTHON" >/dev/null 2>&1; then
        py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < ({major}, {minor}))' \\
            || note "python: found $py, need {major}.{minor}+"
    else
        note "python: $PYTHON not found, need {major}.{minor}+"
    fi
    if [ -n "$unmet" ]; then
        printf '%s' "$unmet" | while IFS= read -r line; do
            if [ -n "$line" ]; then
                printf 'kdf-remote bootstrap: requirement not met: %s\\n' "$line" >&2
            fi
        done
        mkdir -p "$(dirname "$MARKER")" 2>/dev/null \\
            && printf 'failed: requirements\\n%s' "$unmet" > "$MARKER" 2>/dev/null
        exit {EXIT_REQUIREMENTS}
    fi
    log "requirements met: $os_id $arch, $mem_mb MiB memory, $disk_mb MiB free, python $py"
}}""".strip()


def _packages_block(data: BootstrapInput) -> str:
    if not data.steps.packages:
        return 'install_packages() { log "packages: skipped"; }'
    packages = " ".join(os_packages(data.settings))
    return f"""
install_packages() {{
    missing=""
    for p in {packages}; do
        dpkg-query -W -f='${{Status}}' "$p" 2>/dev/null | grep -q 'install ok installed' \\
            || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q || fail "apt-get update failed"
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing \\
            || fail "apt-get install failed:$missing"
    fi
}}""".strip()


def _users_block(data: BootstrapInput) -> str:
    layout = data.layout
    if not data.steps.users:
        return 'create_users() { log "users: skipped (files keep the current owner)"; }'
    return f"""
create_users() {{
    u={_q(layout.daemon_user)}
    if ! getent passwd "$u" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \\
            --shell /usr/sbin/nologin "$u" || fail "cannot create user $u"
    fi
}}""".strip()


def _dirs_block(data: BootstrapInput) -> str:
    layout = data.layout
    d = layout.daemon_user
    entries = [
        (layout.config_dir, "0755", "root:root"),
        (layout.tls_dir, "0750", f"root:{d}"),
        (layout.secrets_dir, "0700", f"{d}:{d}"),
        (layout.state_dir, "0700", f"{d}:{d}"),
        (layout.state_dir / "instances", "0700", f"{d}:{d}"),
        (layout.kdf_data_dir, "0700", f"{d}:{d}"),
        (layout.log_dir, "0750", f"{d}:{d}"),
        (layout.opt_dir, "0755", "root:root"),
        (layout.kdf_bin_dir, "0755", f"{d}:{d}"),
        (layout.lib_dir, "0755", "root:root"),
    ]
    lines = "\n".join(f"    dir {_q(path)} {mode} {owner}" for path, mode, owner in entries)
    return f"make_dirs() {{\n{lines}\n}}"


def _venv_block(data: BootstrapInput) -> str:
    layout = data.layout
    if not data.steps.venv:
        return 'install_venv() { log "virtualenv: skipped"; }'
    spec = data.settings.package
    source = data.target.pip
    options = "".join(f"{_q(option)} " for option in source.pip_options())
    extra_site = _extra_site_lines(source)
    return f"""
install_venv() {{
    venv={_q(layout.venv)}
    installed=$(cat "$venv/.kdf-remote-package" 2>/dev/null || true)
    if [ "$installed" = {_q(spec)} ] && [ -x "$venv/bin/kdf-remote-daemon" ]; then
        log "virtualenv: {spec} already installed"
        return
    fi
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv" \\
        || fail "cannot create the virtualenv $venv"
{extra_site}    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \\
        --no-input {options}{_q(spec)} || fail "pip could not install {spec}"
    [ -x "$venv/bin/kdf-remote-daemon" ] || fail "{spec} did not provide kdf-remote-daemon"
    printf '%s\\n' {_q(spec)} > "$venv/.kdf-remote-package"
    log "virtualenv: installed {spec}"
}}""".strip()


def _extra_site_lines(source: PipSource) -> str:
    """Shell lines naming :attr:`PipSource.extra_site_dirs` in a ``.pth`` of the virtualenv."""
    if not source.extra_site_dirs:
        return ""
    dirs = " ".join(_q(d) for d in source.extra_site_dirs)
    return (
        '    site=$("$venv/bin/python" -c '
        "'import sysconfig; print(sysconfig.get_path(\"purelib\"))')\n"
        f"    printf '%s\\n' {dirs} > \"$site/{EXTRA_SITE_PTH}\"\n"
    )


def _kdf_block(data: BootstrapInput) -> str:
    layout = data.layout
    release = data.kdf
    if not data.steps.kdf:
        return 'install_kdf() { log "KDF binary: skipped"; }'
    # Only real deployments are forced onto https; the bootstrap test serves a file:// zip.
    curl_guard = "--proto =https --tlsv1.2 " if release.url.startswith("https://") else ""
    stamp = f"{release.version} {release.sha256}"
    owner = f"{layout.daemon_user}:{layout.daemon_user}"
    return f"""
install_kdf() {{
    bin={_q(layout.kdf_binary)}
    stamp_file={_q(layout.kdf_bin_dir / ".kdf-release")}
    if [ -x "$bin" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = {_q(stamp)} ]; then
        log "KDF {release.version}: already installed"
        return
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    curl {curl_guard}-fsSL --retry 3 -o "$work/kdf.zip" {_q(release.url)} \\
        || fail "cannot download KDF {release.version} from {release.url}"
    got=$(sha256sum "$work/kdf.zip" | cut -d' ' -f1)
    [ "$got" = {_q(release.sha256)} ] \\
        || fail "KDF zip checksum mismatch: expected {release.sha256}, got $got"
    "$PYTHON" -m zipfile -e "$work/kdf.zip" "$work/x" || fail "cannot unpack the KDF zip"
    # Releases before 2.5.0 ship the binary as mm2 (kdf-facts 0, 4.4).
    if [ -f "$work/x/kdf" ]; then found="$work/x/kdf"
    elif [ -f "$work/x/mm2" ]; then found="$work/x/mm2"
    else fail "the KDF zip holds neither kdf nor mm2 at its root"
    fi
    cp "$found" "$bin.new"
    own "$bin.new" 0755 {owner}
    mv -f "$bin.new" "$bin"
    printf '%s\\n' {_q(stamp)} > "$stamp_file"
    own "$stamp_file" 0644 {owner}
    rm -rf "$work"
    trap - EXIT
    log "KDF {release.version}: installed at $bin"
}}""".strip()


def _files_block(data: BootstrapInput) -> str:
    settings, layout = data.settings, data.layout
    d = layout.daemon_user
    config = render_daemon_config(DaemonConfigInput(settings=settings, layout=layout))
    parts = [
        _heredoc(layout.daemon_config, config, only_if_absent=True),
        f"own {_q(layout.daemon_config)} 0600 {d}:{d}",
        _heredoc(layout.supervise_script, render_supervise_script(layout)),
        f"own {_q(layout.supervise_script)} 0755 root:root",
        f"mkdir -p {_q(layout.unit_dir)}",
        _heredoc(layout.unit_dir / DAEMON_UNIT, render_daemon_unit(settings, layout)),
        f"own {_q(layout.unit_dir / DAEMON_UNIT)} 0644 root:root",
    ]
    if settings.tls.mode == "letsencrypt":
        parts += [
            f"mkdir -p {_q(layout.letsencrypt_hook.parent)}",
            _heredoc(layout.letsencrypt_hook, render_letsencrypt_hook(settings, layout)),
            f"own {_q(layout.letsencrypt_hook)} 0700 root:root",
        ]
    body = "\n".join(parts)
    return f"write_files() {{\n{body}\n}}"


def _service_block(data: BootstrapInput) -> str:
    layout = data.layout
    probe = systemd_probe(data.target.service_manager)
    return f"""
enable_service() {{
    if {probe}; then
        systemctl daemon-reload
        systemctl enable {DAEMON_UNIT} >/dev/null
        log "systemd: {DAEMON_UNIT} enabled (started once its secrets are delivered)"
    else
        log "no systemd: run {layout.supervise_script} as {layout.daemon_user} to start the daemon"
    fi
}}""".strip()


def render_install_script(data: BootstrapInput) -> str:
    """The complete install script for one server."""
    layout = data.layout
    manage_users = "1" if data.steps.users else "0"
    blocks = [
        "#!/bin/sh",
        "# kdf-remote install script, rendered by the Pulumi program. Idempotent; holds no secret.",
        "set -eu",
        "umask 022",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"MARKER={_q(layout.marker)}",
        f"PYTHON={_q(data.target.python)}",
        f"MANAGE_USERS={manage_users}",
        _PRELUDE,
        _requirements_block(data),
        _packages_block(data),
        _users_block(data),
        _dirs_block(data),
        _venv_block(data),
        _kdf_block(data),
        _files_block(data),
        _service_block(data),
        "check_requirements",
        "install_packages",
        "create_users",
        "make_dirs",
        "install_venv",
        "install_kdf",
        "write_files",
        "enable_service",
        f'printf "ok %s\\n" {_q(data.kdf.version)} > "$MARKER"',
        'log "done"',
    ]
    return "\n\n".join(blocks) + "\n"


def render_supervise_script(layout: Layout) -> str:
    """The no-systemd fallback: run the daemon in the foreground, restarting it on failure.

    Meant for containers and hosts without systemd. As under systemd, KDF runs in its own
    session: stopping this script stops the daemon only, and the next daemon start re-adopts the
    running KDF. KDF is stopped through the daemon (``kdf-remote stop <instance>``).
    """
    return f"""\\
#!/bin/sh
# kdf-remote: run the daemon without systemd. Restarts it after a crash, 1 s doubling to 60 s;
# a clean exit (status 0) or SIGTERM/SIGINT to this script ends it. KDF, in its own session,
# keeps running and is re-adopted by the next daemon start.
set -u
daemon={_q(layout.daemon_bin)}
config={_q(layout.daemon_config)}
child=""
stop() {{ [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0; }}
trap stop TERM INT
delay=1
while :; do
    "$daemon" --config "$config" &
    child=$!
    wait "$child"
    status=$?
    child=""
    [ "$status" -eq 0 ] && exit 0
    printf 'kdf-remote supervise: daemon exited with status %s, restarting in %ss\\n' \\
        "$status" "$delay" >&2
    sleep "$delay"
    [ "$delay" -lt 60 ] && delay=$((delay * 2))
done
"""


def render_letsencrypt_hook(settings: Settings, layout: Layout) -> str:
    """certbot deploy hook: copy the renewed certificate where the daemon reads it, restart."""
    d = layout.daemon_user
    fqdn = settings.dns.fqdn if settings.dns else "the daemon's certificate"
    return f"""\\
#!/bin/sh
# kdf-remote: certbot runs this after every issuance and renewal of {fqdn}.
set -eu
live="$RENEWED_LINEAGE"
install -m 0644 -o root -g {d} "$live/fullchain.pem" {_q(layout.tls_cert)}
install -m 0600 -o {d} -g {d} "$live/privkey.pem" {_q(layout.tls_key)}
if [ -d /run/systemd/system ]; then systemctl try-restart {DAEMON_UNIT}; fi
"""
