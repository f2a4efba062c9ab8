"""Errors raised by :mod:`kdf_remote.supervisor`.

::

    SupervisorError
    ├── UnknownInstance   no instance of that name
    ├── InvalidState      the request conflicts with the state or the operation in flight (409)
    ├── NotRunning        the instance has no ready KDF to talk to
    ├── NoStoredConfig    start without a config, and none stored
    ├── StartFailed       KDF did not become ready (exited, start timeout, credentials refused)
    └── KdfUnreachable    KDF did not answer a call (also a kdf_remote.kdf.KdfUnreachable)

Messages never contain secrets.
"""

from __future__ import annotations

from kdf_remote.kdf import errors as kdf_errors

__all__ = [
    "InvalidState",
    "KdfUnreachable",
    "NoStoredConfig",
    "NotRunning",
    "StartFailed",
    "SupervisorError",
    "UnknownInstance",
]


class SupervisorError(Exception):
    """Base of every error raised by the supervisor."""


class UnknownInstance(SupervisorError, KeyError):  # noqa: N818 (name fixed by the interface)
    """No instance is registered under that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown instance"


class InvalidState(SupervisorError):  # noqa: N818 (name fixed by the interface)
    """The request conflicts with the instance's state or with the operation in flight."""


class NotRunning(SupervisorError):  # noqa: N818 (name fixed by the interface)
    """The instance has no ready KDF process."""


class NoStoredConfig(SupervisorError):  # noqa: N818 (name fixed by the interface)
    """A start without a config was requested and no config is stored."""


class StartFailed(SupervisorError):  # noqa: N818 (reads as a state, like the others)
    """KDF exited, hung past the start timeout, or refused the credentials while starting."""


class KdfUnreachable(SupervisorError, kdf_errors.KdfUnreachable):  # noqa: N818 (interface)
    """KDF did not answer (refused, reset or timed out)."""
