"""Fixtures shared by every test package.

Each part keeps its own fixtures in its own `conftest.py`; only what every part needs lives here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep every test away from the real user's profiles and data (XDG dirs)."""
    root = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(root / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))
    monkeypatch.delenv("KDF_REMOTE_PROFILE", raising=False)


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The directory holding this interpreter's console scripts (kdf-sim, kdf-remote, ...)."""
    return Path(sys.executable).parent
