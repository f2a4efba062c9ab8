"""Fixtures of the workers/update/backup/metrics unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/_release_fixtures.py is shared by several test packages; tests/ is not a package.
_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
