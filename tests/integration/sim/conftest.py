"""Shared fixtures for kdf-sim's process-level tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, offline_config, start_sim

RPC_PASSWORD = "Sim-Test-Pass-7!"
COINS = [
    {"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}},
    {"coin": "ETH", "protocol": {"type": "ETH"}},
]


@pytest.fixture
def rpc_password() -> str:
    """The rpc_password of every config built by `sim_config`."""
    return RPC_PASSWORD


ConfigFactory = Callable[..., dict[str, object]]


@pytest.fixture
def sim_config() -> ConfigFactory:
    """Factory: a valid offline config with two coins, plus keyword overrides."""

    def build(**overrides: object) -> dict[str, object]:
        config = offline_config(RPC_PASSWORD, coins=COINS)
        config.update(overrides)
        return config

    return build


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[RunningSim]:
    """A running kdf-sim in no-login mode."""
    with start_sim(offline_config(RPC_PASSWORD, coins=COINS), cwd=tmp_path) as running:
        yield running


@pytest.fixture
def wallet_sim(tmp_path: Path) -> Iterator[RunningSim]:
    """A running kdf-sim logged in with a plaintext passphrase."""
    config = offline_config(RPC_PASSWORD, coins=COINS, passphrase="kdf sim test passphrase words")
    with start_sim(config, cwd=tmp_path) as running:
        yield running
