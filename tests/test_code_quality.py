"""The code is ruff-clean, ruff-formatted and mypy-strict clean, so CI holds the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["api", "client", "daemon", "supervisor", "kdf", "sim", "infra", "tests", "bench"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_lint_is_clean() -> None:
    """`ruff check` finds nothing in any part."""
    pytest.importorskip("ruff")
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", *PARTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    """`ruff format --check` would change no file."""
    pytest.importorskip("ruff")
    result = _run("ruff", "format", "--no-cache", "--check", *PARTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy (strict, configured in pyproject.toml) reports no error in any part."""
    pytest.importorskip("mypy")
    result = _run("mypy", *PARTS)
    assert result.returncode == 0, result.stdout + result.stderr
