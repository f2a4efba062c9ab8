"""Test-only failure modes of kdf-sim, switched by ``KDF_SIM_*`` environment variables.

Real KDF never reads these variables; they exist so that supervisors and proxies can be tested
against a KDF that starts slowly, crashes, hangs, ignores stop requests, floods its logs or leaks
memory. They are parsed once at start-up into :class:`FailureModes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_VERSION", "FailureModeError", "FailureModes", "parse_failure_modes"]

DEFAULT_VERSION = "2.5.1-beta_kdfsim0"
DEFAULT_LOG_LINE_BYTES = 120

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class FailureModeError(ValueError):
    """A ``KDF_SIM_*`` variable holds a value kdf-sim cannot use."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"{variable}={value!r}: expected {expected}")
        self.variable = variable
        self.value = value
        self.expected = expected


@dataclass(frozen=True, slots=True)
class FailureModes:
    """The failure modes of one kdf-sim process (all off by default)."""

    version: str = DEFAULT_VERSION
    """Version string reported by ``--version``, the banner and the ``version`` RPC."""
    start_delay: float = 0.0
    """Seconds between start-up and binding the RPC port."""
    exit_after: float | None = None
    """Exit with :attr:`exit_code` this many seconds after the RPC is up."""
    exit_code: int = 1
    hang: bool = False
    """Log the banner but never bind the RPC."""
    ignore_stop: bool = False
    """Answer the ``stop`` RPC with success but keep running."""
    ignore_sigint: bool = False
    log_rate: float = 0.0
    """Extra log lines written per second."""
    log_line_bytes: int = DEFAULT_LOG_LINE_BYTES
    grow_memory: int = 0
    """Bytes of resident memory added per second."""
    request_log: str | None = None
    """File that receives one JSON line per RPC received."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise FailureModeError(name, raw, "1 or 0")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise FailureModeError(name, raw, "a non-negative number") from None
    if not value >= 0 or value == float("inf"):
        raise FailureModeError(name, raw, "a non-negative number")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, lowest: int, highest: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FailureModeError(name, raw, f"an integer in {lowest}..{highest}") from None
    if not lowest <= value <= highest:
        raise FailureModeError(name, raw, f"an integer in {lowest}..{highest}")
    return value


def parse_failure_modes(env: Mapping[str, str]) -> FailureModes:
    """Read every ``KDF_SIM_*`` variable; raises :class:`FailureModeError` on a bad one."""
    version = env.get("KDF_SIM_VERSION", "").strip() or DEFAULT_VERSION
    exit_after_raw = env.get("KDF_SIM_EXIT_AFTER", "").strip()
    exit_after = _number(env, "KDF_SIM_EXIT_AFTER", 0.0) if exit_after_raw else None
    request_log = env.get("KDF_SIM_REQUEST_LOG", "").strip() or None
    return FailureModes(
        version=version,
        start_delay=_number(env, "KDF_SIM_START_DELAY", 0.0),
        exit_after=exit_after,
        exit_code=_integer(env, "KDF_SIM_EXIT_CODE", 1, 0, 255),
        hang=_flag(env, "KDF_SIM_HANG"),
        ignore_stop=_flag(env, "KDF_SIM_IGNORE_STOP"),
        ignore_sigint=_flag(env, "KDF_SIM_IGNORE_SIGINT"),
        log_rate=_number(env, "KDF_SIM_LOG_RATE", 0.0),
        log_line_bytes=_integer(
            env, "KDF_SIM_LOG_LINE_BYTES", DEFAULT_LOG_LINE_BYTES, 64, 1024 * 1024
        ),
        grow_memory=int(_number(env, "KDF_SIM_GROW_MEMORY", 0.0)),
        request_log=request_log,
    )
