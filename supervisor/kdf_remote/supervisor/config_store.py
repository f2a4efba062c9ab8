"""The stored startup config: validated once, kept 0600 in the run directory, used by each start.

Also keeps the instance's log :class:`~.logs.Redactor` in step with the secrets it knows.
"""

from __future__ import annotations

import logging

import msgspec

from kdf_remote.kdf.config import (
    KdfStartupConfig,
    decode_startup_config,
    encode_startup_config,
    validate_startup_config,
)
from kdf_remote.kdf.errors import KdfConfigError
from kdf_remote.kdf.password import generate_rpc_password
from kdf_remote.supervisor.files import write_private
from kdf_remote.supervisor.instance import Instance
from kdf_remote.supervisor.logs import Redactor
from kdf_remote.supervisor.spec import InstanceSpec

__all__ = [
    "STORED_CONFIG_FILE",
    "load_stored_config",
    "prepare_config",
    "refresh_redactor",
    "store_config",
]

_log = logging.getLogger("kdf_remote.supervisor")

STORED_CONFIG_FILE = "config.json"


def prepare_config(config: KdfStartupConfig) -> KdfStartupConfig:
    """Validate ``config``, generating a missing ``rpc_password``; refuse ``https: true``."""
    if config.https:
        raise KdfConfigError(
            "https", True, "false or absent: terminate TLS in the daemon, KDF stays on HTTP"
        )
    if config.rpc_password is None:
        config = msgspec.structs.replace(config, rpc_password=generate_rpc_password())
    validate_startup_config(config)
    return config


def store_config(inst: Instance, config: KdfStartupConfig) -> None:
    """Persist ``config`` (durably, 0600) as the one the instance's next start uses."""
    write_private(
        inst.spec.run_dir / STORED_CONFIG_FILE, encode_startup_config(config), durable=True
    )
    inst.stored = config
    refresh_redactor(inst)


def load_stored_config(spec: InstanceSpec) -> KdfStartupConfig | None:
    """The config an earlier supervisor stored for this instance, if usable."""
    path = spec.run_dir / STORED_CONFIG_FILE
    try:
        return decode_startup_config(path.read_bytes())
    except FileNotFoundError:
        return None
    except KdfConfigError as exc:
        _log.warning("instance %s: ignoring unusable stored config: %s", spec.name, exc)
        return None


def refresh_redactor(inst: Instance) -> None:
    """Redact every secret of the stored config and the running KDF's rpc_password."""
    secrets: list[str] = []
    for config in (inst.stored,):
        if config is None:
            continue
        for value in (config.passphrase, config.rpc_password, config.wallet_password):
            if isinstance(value, str):
                secrets.append(value)
    if inst.password:
        secrets.append(inst.password)
    inst.redactor = Redactor(secrets)
