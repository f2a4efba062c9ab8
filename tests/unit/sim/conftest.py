"""Fixtures for kdf-sim's unit tests: a Node built in-process, logs captured in files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdf_remote.sim.config import decode_config
from kdf_remote.sim.kdflog import KdfLog
from kdf_remote.sim.methods import LEGACY_METHODS, V2_METHODS
from kdf_remote.sim.node import Node
from kdf_remote.sim.protocol import Reply, handle_body
from kdf_remote.sim.wallet import WalletIdentity

RPC_PASSWORD = "Unit-Pass-42!"
LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.9", 50000)
COINS = [
    {"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}},
    {"coin": "ETH", "protocol": {"type": "ETH"}},
]


@dataclass
class LogFiles:
    """Where a test node's stdout and stderr lines went."""

    stdout: Path
    stderr: Path

    def err_text(self) -> str:
        return self.stderr.read_text()


@dataclass
class Harness:
    """A node plus a `call` helper that goes through the whole request pipeline."""

    node: Node
    logs: LogFiles

    def call(
        self, body: object, *, peer: tuple[str, int] = LOOPBACK, method: str = "POST"
    ) -> Reply:
        import json

        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return handle_body(self.node, LEGACY_METHODS, V2_METHODS, method, raw, peer=peer)


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Factory: a Harness for a config (defaults: offline, two coins, rpc_password set)."""
    fds: list[int] = []

    def build(*, passphrase: str | None = None, **overrides: object) -> Harness:
        conf: dict[str, object] = {"rpc_password": RPC_PASSWORD, "disable_p2p": True}
        conf.update(overrides)
        config = decode_config(conf, COINS)
        logs = LogFiles(tmp_path / "stdout.txt", tmp_path / "stderr.txt")
        out = os.open(logs.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        err = os.open(logs.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        fds.extend((out, err))
        log = KdfLog(mm_log=None, rust_log=None, stdout_fd=out, stderr_fd=err)
        identity = WalletIdentity(passphrase.encode(), False, None) if passphrase else None
        node = Node(
            config=config,
            version="2.5.1-beta_unit",
            datetime="2025-07-28T09:40:51+00:00",
            log=log,
            db_root=tmp_path / "DB",
            identity=identity,
            peer_id=identity.peer_id() if identity else "12D3KooWUnit",
        )
        return Harness(node, logs)

    yield build
    for fd in fds:
        os.close(fd)
