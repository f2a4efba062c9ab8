"""Shared set-up of the infra tests: the mock-deployment harness lives beside them."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib does not put test folders on sys.path; the harness modules here are
# imported by name (tests/ itself is on it through pyproject's pytest `pythonpath`).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
