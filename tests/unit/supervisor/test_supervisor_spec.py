"""InstanceSpec and its parts are validated once, at construction, naming the bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdf_remote.supervisor import InstanceSpec, ResourceLimits, Timeouts

pytestmark = pytest.mark.unit


def spec(**overrides: Any) -> InstanceSpec:
    """A valid spec with some fields replaced."""
    fields: dict[str, Any] = {
        "name": "main",
        "binary_path": "/usr/local/bin/kdf",
        "data_dir": "/var/lib/kdf",
        "run_dir": "/var/lib/kdf-remote/main",
        "rpc_port": 7783,
    }
    return InstanceSpec(**(fields | overrides))


def test_defaults_and_paths() -> None:
    """Paths are coerced to Path; defaults are the documented ones."""
    s = spec()
    assert s.binary_path == Path("/usr/local/bin/kdf")
    assert s.log_path == Path("/var/lib/kdf-remote/main/kdf.log")
    assert s.restart.max_restart_attempts == 3
    assert s.timeouts.start_s == 30.0
    assert s.log_max_bytes == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "../etc"}, "name"),
        ({"name": ""}, "name"),
        ({"rpc_port": 80}, "rpc_port"),
        ({"rpc_port": 70000}, "rpc_port"),
        ({"log_max_bytes": 10}, "log_max_bytes"),
        ({"log_backups": -1}, "log_backups"),
        ({"health_interval_s": 0}, "health_interval_s"),
        ({"env": {"MM_CONF_PATH": "/x"}}, "env"),
        ({"env": {"A=B": "x"}}, "env"),
    ],
)
def test_bad_spec_fields(overrides: dict[str, Any], field: str) -> None:
    """Each bad field is refused with its name in the message."""
    with pytest.raises(ValueError, match=field):
        spec(**overrides)


@pytest.mark.parametrize("field", ["start_s", "stop_rpc_s", "sigint_s", "sigkill_s", "probe_s"])
def test_timeouts_must_be_positive(field: str) -> None:
    """Zero, negative or infinite timeouts are refused."""
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=field):
            Timeouts(**{field: bad})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"memory_bytes": 1024}, "memory_bytes"),
        ({"cpu": 0}, "cpu"),
        ({"open_files": 10}, "open_files"),
    ],
)
def test_invalid_limits_are_rejected(kwargs: dict[str, Any], field: str) -> None:
    """Limits that could never work are refused up front, not after endless spawn retries."""
    with pytest.raises(ValueError, match=field):
        ResourceLimits(**kwargs)


def test_env_is_copied() -> None:
    """The spec keeps its own copy of env; later changes to the caller's dict do not leak in."""
    env = {"RUST_LOG": "info"}
    s = spec(env=env)
    env["RUST_LOG"] = "trace"
    assert s.env == {"RUST_LOG": "info"}
