"""The state file and re-adoption of a KDF left running by an earlier supervisor.

A KDF is re-adopted only if the pid in ``run_dir/state.json`` is alive with the recorded start
time and command line; anything else (a recycled pid) is neither adopted nor signalled.
"""

from __future__ import annotations

import logging
import os

import msgspec
import psutil

from kdf_remote.kdf.config import decode_startup_config
from kdf_remote.kdf.errors import KdfConfigError
from kdf_remote.supervisor.files import StateRecord, read_state, remove_quietly, write_private
from kdf_remote.supervisor.instance import Instance
from kdf_remote.supervisor.process import ProcessIdentity, identity_of
from kdf_remote.supervisor.spawn import ACTIVE_CONFIG_FILE
from kdf_remote.supervisor.spec import InstanceSpec

__all__ = [
    "STATE_FILE",
    "active_password",
    "find_adoptable",
    "is_our_child",
    "record_state",
]

_log = logging.getLogger("kdf_remote.supervisor")

STATE_FILE = "state.json"


def record_state(inst: Instance, identity: ProcessIdentity) -> None:
    """Write the state file a later supervisor re-adopts the instance's KDF from."""
    record = StateRecord(
        pid=identity.pid,
        create_time=identity.create_time,
        cmdline=list(identity.cmdline),
        rpc_host=inst.rpc_host,
        rpc_port=inst.spec.rpc_port,
    )
    write_private(inst.spec.run_dir / STATE_FILE, msgspec.json.encode(record))


def find_adoptable(spec: InstanceSpec) -> tuple[StateRecord, ProcessIdentity] | None:
    """The state file's record and the live process it names, if that is still our KDF.

    A state file naming a process that is gone (or a different one) is removed.
    """
    record = read_state(spec.run_dir / STATE_FILE)
    if record is None:
        return None
    expected = ProcessIdentity(record.pid, record.create_time, tuple(record.cmdline))
    current = identity_of(record.pid)
    if current is None or not current.matches(expected):
        _log.info(
            "instance %s: not adopting pid %d (gone or a different process)",
            spec.name,
            record.pid,
        )
        remove_quietly(spec.run_dir / STATE_FILE)
        return None
    return record, current


def active_password(spec: InstanceSpec) -> str | None:
    """The rpc_password of the config file the running KDF was started with."""
    # The file the running KDF was started with, not the stored config (which set_config may
    # have replaced since): the only password that KDF is sure to accept.
    try:
        return decode_startup_config((spec.run_dir / ACTIVE_CONFIG_FILE).read_bytes()).rpc_password
    except (FileNotFoundError, KdfConfigError):
        return None


def is_our_child(pid: int) -> bool:
    """Whether ``pid`` is a child of this process (so it can be reaped with waitpid)."""
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.Error:
        return False
