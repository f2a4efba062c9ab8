"""Parsing of the KDF_SIM_* switches (docs/architecture.md, kdf-sim table)."""

from __future__ import annotations

import pytest

from kdf_remote.sim.failure_modes import (
    DEFAULT_VERSION,
    FailureModeError,
    FailureModes,
    parse_failure_modes,
)

pytestmark = pytest.mark.unit


def test_defaults_are_all_off() -> None:
    """No variables: the default version and no failure mode."""
    assert parse_failure_modes({}) == FailureModes()
    assert FailureModes().version == DEFAULT_VERSION == "2.5.1-beta_kdfsim0"


def test_every_variable_is_read() -> None:
    """Each documented variable lands in its field."""
    modes = parse_failure_modes(
        {
            "KDF_SIM_VERSION": "9.9.9_test",
            "KDF_SIM_START_DELAY": "1.5",
            "KDF_SIM_EXIT_AFTER": "2",
            "KDF_SIM_EXIT_CODE": "42",
            "KDF_SIM_HANG": "1",
            "KDF_SIM_IGNORE_STOP": "true",
            "KDF_SIM_IGNORE_SIGINT": "yes",
            "KDF_SIM_LOG_RATE": "100",
            "KDF_SIM_LOG_LINE_BYTES": "200",
            "KDF_SIM_GROW_MEMORY": "1048576",
            "KDF_SIM_REQUEST_LOG": "/tmp/requests.jsonl",
        }
    )
    assert modes == FailureModes(
        version="9.9.9_test",
        start_delay=1.5,
        exit_after=2.0,
        exit_code=42,
        hang=True,
        ignore_stop=True,
        ignore_sigint=True,
        log_rate=100.0,
        log_line_bytes=200,
        grow_memory=1048576,
        request_log="/tmp/requests.jsonl",
    )


def test_exit_after_zero_is_set_and_default_code_is_one() -> None:
    """KDF_SIM_EXIT_AFTER=0 means right after the RPC is up, with exit code 1 by default."""
    modes = parse_failure_modes({"KDF_SIM_EXIT_AFTER": "0"})
    assert modes.exit_after == 0.0
    assert modes.exit_code == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KDF_SIM_START_DELAY", "soon"),
        ("KDF_SIM_START_DELAY", "-1"),
        ("KDF_SIM_EXIT_AFTER", "nan"),
        ("KDF_SIM_EXIT_CODE", "256"),
        ("KDF_SIM_HANG", "maybe"),
        ("KDF_SIM_LOG_LINE_BYTES", "10"),
        ("KDF_SIM_GROW_MEMORY", "inf"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    """A bad value raises an error naming the variable, the value and what was expected."""
    with pytest.raises(FailureModeError) as err:
        parse_failure_modes({name: value})
    assert err.value.variable == name
    assert name in str(err.value)
    assert value in str(err.value)
