"""Fixtures of the workers/update/backup/metrics integration tests."""

from __future__ import annotations
