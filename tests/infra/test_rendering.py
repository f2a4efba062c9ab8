"""Rendered artefacts pass the checks of the tools that consume them.

* daemon.yaml is accepted by the daemon's own settings reader;
* the cloud-config validates against cloud-init's JSON schema (and ``cloud-init schema``);
* the systemd unit passes ``systemd-analyze verify`` and scores at most 2.5 with
  ``systemd-analyze security --offline=true``, and matches the supervisor's process model;
* the install script is valid POSIX shell.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from _infra_settings import make_settings as make
from kdf_remote.infra.bootstrap_script import BootstrapInput, render_install_script
from kdf_remote.infra.cloud_init import gzip_user_data, render_cloud_config
from kdf_remote.infra.daemon_config import DaemonConfigInput, render_daemon_config
from kdf_remote.infra.layout import Layout
from kdf_remote.infra.systemd_units import DAEMON_UNIT, TASKS_PER_PROCESS, render_daemon_unit

pytestmark = pytest.mark.unit

CLOUD_INIT_SCHEMA = Path(
    "/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json"
)
MAX_EXPOSURE = 2.5


VARIANTS: dict[str, dict[str, object]] = {
    "aws-default": {},
    "do-compat-p2p": {
        "provider": "do",
        "region": "fra1",
        "kdf_compat": {"enabled": True, "port": 7000},
        "p2p": {"enabled": True},
    },
    "custom-letsencrypt-like": {
        "provider": "custom",
        "region": "home",
        "custom_host": {"host": "192.0.2.10", "user": "admin"},
    },
    "aws-letsencrypt": {
        "dns": {"zone": "Z0123456789", "fqdn": "kdf.example.com"},
        "tls": {"mode": "letsencrypt", "email": "ops@example.com"},
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_daemon_config_is_accepted_by_the_daemon(variant: str) -> None:
    """The rendered daemon.yaml parses with the daemon's reader and keeps the values we set."""
    settings_module = pytest.importorskip("kdf_remote.daemon.settings")
    settings = make(**VARIANTS[variant])
    key_hash = "sha256:" + "ab" * 32
    text = render_daemon_config(
        DaemonConfigInput(settings=settings, layout=Layout(), api_key_hash=key_hash)
    )
    parsed = settings_module.parse_settings(text, source="daemon.yaml")
    assert parsed.daemon.port == settings.daemon_port
    assert parsed.kdf.rpc_port == settings.kdf_rpc_port
    assert str(parsed.kdf.binary_path) == str(Layout().kdf_binary)
    assert [k.digest.hex() for k in parsed.security.api_keys] == ["ab" * 32]
    assert [k.role.label for k in parsed.security.api_keys] == ["admin"]
    assert {str(n) for n in parsed.security.allowed_ips} >= set(settings.allowed_ips)
    assert parsed.security.ssl is not None
    assert str(parsed.security.ssl.key_path) == str(Layout().tls_key)
    assert str(parsed.security.jwt.key_file) == str(Layout().jwt_key)
    assert parsed.kdf_compat.enabled == settings.kdf_compat.enabled
    # Verified updates install beside the pinned release, from its origin only.
    assert str(parsed.kdf.bin_dir) == str(Layout().kdf_bin_dir)
    assert len(parsed.kdf.release_origins) == 1
    assert settings.kdf.url.startswith(parsed.kdf.release_origins[0] + "/")


def test_first_boot_config_holds_no_key_hash() -> None:
    """The copy that travels in user data has an empty key list."""
    text = render_daemon_config(DaemonConfigInput(settings=make(), layout=Layout()))
    assert yaml.safe_load(text)["security"]["api_keys"] == []
    assert "sha256:" not in text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cloud_config_matches_cloud_init_schema(variant: str) -> None:
    """The user data validates against cloud-init's JSON schema; a broken copy does not."""
    if not CLOUD_INIT_SCHEMA.exists():
        pytest.skip(
            f"cloud-init's schema is absent ({CLOUD_INIT_SCHEMA}): apt-get install cloud-init"
        )
    import jsonschema_rs

    validator = jsonschema_rs.validator_for(json.loads(CLOUD_INIT_SCHEMA.read_text()))
    text = render_cloud_config(
        BootstrapInput(settings=make(**VARIANTS[variant])),
        ssh_public_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeploy ops@example",),
    )
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    errors = [str(e) for e in validator.iter_errors(document)]
    assert errors == []
    broken = dict(document, users=[{"nam": "kdf"}])
    assert list(validator.iter_errors(broken)), "the validator accepted a broken users entry"
    assert len(gzip_user_data(text)) < 16 * 1024, "AWS caps user data at 16 KB"
    assert gzip_user_data(text) == gzip_user_data(text)


def test_cloud_config_passes_cloud_init_cli(tmp_path: Path) -> None:
    """cloud-init's own `schema` command accepts the document."""
    tool = shutil.which("cloud-init")
    if tool is None:
        pytest.skip("cloud-init is not installed: apt-get install cloud-init")
    path = tmp_path / "user-data"
    path.write_text(render_cloud_config(BootstrapInput(settings=make())))
    result = subprocess.run(
        [tool, "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_install_script_is_valid_posix_shell(variant: str, tmp_path: Path) -> None:
    """`sh -n` accepts the script, and every heredoc is closed."""
    script = render_install_script(BootstrapInput(settings=make(**VARIANTS[variant])))
    path = tmp_path / "install.sh"
    path.write_text(script)
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    opened = re.findall(r"<<'(KDF_REMOTE_EOF_[0-9A-F]+)'", script)
    assert opened
    for marker in opened:
        assert re.search(rf"^{marker}$", script, re.MULTILINE), marker


def _unit(tmp_path: Path, **extra: object) -> Path:
    """Render the daemon unit with a daemon binary that exists (verify checks ExecStart)."""
    layout = Layout().under(str(tmp_path / "root"))
    binary = Path(str(layout.daemon_bin))
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    path = tmp_path / DAEMON_UNIT
    path.write_text(render_daemon_unit(make(**extra), layout))
    return path


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed: apt-get install systemd")
    return tool


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify prints nothing: no unknown directive, no bad value, ExecStart exists."""
    tool = _systemd_analyze()
    path = _unit(tmp_path)
    result = subprocess.run(
        [tool, "verify", str(path)], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about unknown keys; any message is a defect here.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_verify_would_catch_a_misspelled_directive(tmp_path: Path) -> None:
    """The verify check above is not vacuous: a typo in a directive produces a message."""
    tool = _systemd_analyze()
    path = _unit(tmp_path)
    path.write_text(path.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = subprocess.run(
        [tool, "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert "NoNewPrivilege" in result.stderr


def _exposure(tool: str, path: Path) -> float:
    result = subprocess.run(
        [tool, "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_unit_scores_at_most_2_5(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the unit at most 2.5 (OK)."""
    tool = _systemd_analyze()
    path = _unit(tmp_path)
    score = _exposure(tool, path)
    print(f"systemd-analyze security exposure of {path.name}: {score}")
    assert score <= MAX_EXPOSURE
    weakened = tmp_path / "weakened" / DAEMON_UNIT
    weakened.parent.mkdir()
    weakened.write_text(re.sub(r"(?m)^(Protect|Private|Restrict)\w+=.*\n", "", path.read_text()))
    assert _exposure(tool, weakened) > score, "the score does not react to the sandbox"


def test_unit_matches_the_supervisors_process_model() -> None:
    """KDF is the daemon's child: only the daemon is signalled on stop, KDF survives to be
    re-adopted; there is no KDF unit, no polkit rule and no second account."""
    settings, layout = make(max_workers=3), Layout()
    unit = render_daemon_unit(settings, layout)
    directives = [line for line in unit.splitlines() if "=" in line and not line.startswith("#")]
    assert [d for d in directives if d.startswith("KillMode=")] == ["KillMode=process"]
    assert f"User={layout.daemon_user}" in directives
    assert not [d for d in directives if d.startswith(("SupplementaryGroups=", "PrivateUsers="))]
    assert f"StateDirectory={layout.state_dir.name} {layout.kdf_data_dir.name}" in directives
    # One task budget for the daemon, main and every worker sharing the cgroup.
    assert f"TasksMax={TASKS_PER_PROCESS * 5}" in directives
    script = render_install_script(BootstrapInput(settings=settings))
    assert "kdf-remote-kdf@" not in script and "polkit" not in script
    assert "useradd" in script and script.count("useradd") == 1


def test_unit_carries_the_documented_hardening() -> None:
    """The unit has the sandbox directives and writable paths docs/security.md promises."""
    settings, layout = make(), Layout()
    directives = render_daemon_unit(settings, layout).splitlines()
    for line in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "UMask=0077",
    ):
        assert line in directives, line
    assert any(d.startswith(("ReadWritePaths=", "StateDirectory=")) for d in directives)
    assert not any("CAP_SYS_ADMIN" in d for d in directives)
    assert not any(
        d.startswith("AmbientCapabilities=") and d.strip() != "AmbientCapabilities="
        for d in directives
    )
