"""Shared set-up of the infra tests: the mock-deployment harness lives beside them."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib does not put test folders on sys.path; the harness modules here and
# tests/_release_fixtures.py (shared by several test packages) are imported by name.
_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE), str(_HERE.parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
