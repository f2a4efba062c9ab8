"""Spawning KDF: its config files, environment, resource limits and run-as user.

Secrets. The startup config is written to ``run_dir/MM2.json`` (0600) and passed with
``MM_CONF_PATH``; argv is the binary path alone; the environment is a short allow-list plus the
spec's ``env``.

Limits. Each spawn is prepared by the :class:`~.resource_limits.LimitEnforcer` (argv prefix and a
pre-exec hook), so limits hold from KDF's first instruction.

Run-as. With ``InstanceSpec.user`` set, KDF switches to that uid/gid (no supplementary groups)
after the limits' pre-exec; its data directory and its two config files are chowned to it and
the run directory becomes 0711 (traversable, not listable) so it can read them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import msgspec

from kdf_remote.kdf.config import KdfStartupConfig, encode_startup_config
from kdf_remote.supervisor.files import ensure_private_dir, remove_quietly, write_private
from kdf_remote.supervisor.instance import Instance
from kdf_remote.supervisor.logs import open_log_for_append
from kdf_remote.supervisor.process import spawn
from kdf_remote.supervisor.resource_limits import LimitEnforcer
from kdf_remote.supervisor.spec import ResourceLimits

__all__ = [
    "ACTIVE_CONFIG_FILE",
    "COINS_FILE",
    "INHERITED_ENV",
    "effective_config",
    "launch",
    "rpc_host",
]

ACTIVE_CONFIG_FILE = "MM2.json"
COINS_FILE = "coins.json"
# The only variables KDF inherits from the supervisor's environment (which may hold the daemon's
# own secrets); everything else must come from InstanceSpec.env.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
)


def effective_config(inst: Instance) -> KdfStartupConfig:
    """The stored config with the spec's RPC port and, unless set, its data directory."""
    assert inst.stored is not None
    changes: dict[str, Any] = {"rpcport": inst.spec.rpc_port}
    if inst.stored.dbdir is None:
        changes["dbdir"] = str(inst.spec.data_dir)
    return msgspec.structs.replace(inst.stored, **changes)


def rpc_host(config: KdfStartupConfig) -> str:
    """The address to reach KDF's RPC at (loopback when it binds every address)."""
    ip = config.effective_rpcip
    if ip == "0.0.0.0":
        return "127.0.0.1"
    if ip == "::":
        return "::1"
    return ip


def launch(inst: Instance, config: KdfStartupConfig, enforcer: LimitEnforcer) -> int:
    """Write KDF's config files, prepare its limits and spawn it; returns its pid.

    Raises OSError, :class:`subprocess.SubprocessError` (the limits' pre-exec or the run-as
    switch failed in the child) or :class:`~.resource_limits.LimitsError`.
    """
    spec = inst.spec
    ensure_private_dir(spec.run_dir)
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    env = _child_env(inst)
    conf_path = spec.run_dir / ACTIVE_CONFIG_FILE
    coins_path = spec.run_dir / COINS_FILE
    _write_if_changed(inst, conf_path, encode_startup_config(config.without_coins()))
    env["MM_CONF_PATH"] = str(conf_path)
    if config.coins is not None:
        _write_if_changed(inst, coins_path, msgspec.json.encode(config.coins))
        env["MM_COINS_PATH"] = str(coins_path)
    else:
        inst.written.pop(coins_path, None)
        remove_quietly(coins_path)
    if spec.run_as is not None:
        _hand_over_files(inst, conf_path, coins_path)
    plan = enforcer.prepare(inst.limit_key, spec.limits or ResourceLimits())
    log_fd = open_log_for_append(spec.log_path)
    try:
        return spawn(
            plan.wrap([str(spec.binary_path)]),
            cwd=spec.data_dir,
            env=env,
            log_fd=log_fd,
            preexec=plan.preexec,
            run_as=spec.run_as,
        )
    finally:
        os.close(log_fd)


def _child_env(inst: Instance) -> dict[str, str]:
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env.update(inst.spec.env)
    return env


def _write_if_changed(inst: Instance, path: Path, data: bytes) -> None:
    # The same config is rewritten on every restart; skipping identical writes keeps the
    # respawn path short.
    if inst.written.get(path) == data and path.exists():
        return
    write_private(path, data)
    inst.written[path] = data


def _hand_over_files(inst: Instance, conf_path: Path, coins_path: Path) -> None:
    """Let the run-as user read its config files and own its data directory."""
    spec = inst.spec
    assert spec.run_as is not None
    uid, gid = spec.run_as.uid, spec.run_as.gid
    spec.run_dir.chmod(0o711)
    for path in (conf_path, coins_path):
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, uid, gid)
    stat = spec.data_dir.stat()
    if (stat.st_uid, stat.st_gid) != (uid, gid):
        # First start as this user (or a new user): take over what an earlier run left.
        for root, dirs, files in os.walk(spec.data_dir):
            for entry in (*dirs, *files):
                os.chown(Path(root) / entry, uid, gid, follow_symlinks=False)
        os.chown(spec.data_dir, uid, gid)
