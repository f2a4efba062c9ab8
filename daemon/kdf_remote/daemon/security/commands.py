"""Attach ``keys``, ``tls`` and ``audit`` to the daemon's cyclopts App without importing them.

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

__all__ = ["AUDIT_HELP", "KEYS_HELP", "TLS_HELP", "register"]

KEYS_HELP: Final = "Manage API keys (only their hashes are stored)."
TLS_HELP: Final = "Create the private CA and server certificate."
AUDIT_HELP: Final = "Check the audit log."
_MODULE: Final = "kdf_remote.daemon.security.cli"


def register(app: App) -> None:
    """Attach the security sub-apps to the daemon's root App (lazily, by import path)."""
    app.command(f"{_MODULE}:keys_app", name="keys", help=KEYS_HELP)
    app.command(f"{_MODULE}:tls_app", name="tls", help=TLS_HELP)
    app.command(f"{_MODULE}:audit_app", name="audit", help=AUDIT_HELP)
