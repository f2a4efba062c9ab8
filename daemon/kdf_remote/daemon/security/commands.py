"""Attach ``init``, ``keys``, ``tls`` and ``audit`` to the daemon's cyclopts App, lazily.

.. code-block:: python

    from kdf_remote.daemon.security.commands import register
    register(app)

The sub-apps live in :mod:`kdf_remote.daemon.security.cli` and are imported only when one of
their commands runs, so ``kdf-remote-daemon --help`` and serving stay as fast as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cyclopts import App

__all__ = ["AUDIT_HELP", "INIT_HELP", "KEYS_HELP", "TLS_HELP", "register"]

INIT_HELP: Final = "Write a complete daemon set-up (config, TLS, JWT key, admin API key)."
KEYS_HELP: Final = "Manage API keys (only their hashes are stored)."
TLS_HELP: Final = "Create the private CA and server certificate."
AUDIT_HELP: Final = "Check the audit log."
_MODULE: Final = "kdf_remote.daemon.security.cli"


def register(app: App) -> None:
    """Attach the security commands to the daemon's root App (lazily, by import path)."""
    app.command(f"{_MODULE}:init_command", name="init", help=INIT_HELP)
    app.command(f"{_MODULE}:keys_app", name="keys", help=KEYS_HELP)
    app.command(f"{_MODULE}:tls_app", name="tls", help=TLS_HELP)
    app.command(f"{_MODULE}:audit_app", name="audit", help=AUDIT_HELP)
