"""The ``kdf_compat`` listener: KDF's own RPC protocol for apps built on the Komodo DeFi SDK.

- :mod:`~kdf_remote.daemon.compat.app`: the raw ASGI app (:class:`CompatApp`);
- :mod:`~kdf_remote.daemon.compat.protocol`: KDF's request and error shapes (pure functions);
- :mod:`~kdf_remote.daemon.compat.guard`: userpass check and the lock-out;
- :mod:`~kdf_remote.daemon.compat.backend`: the fronted instance, over the supervisor;
- :mod:`~kdf_remote.daemon.compat.sse`: ``GET /event-stream`` relayed from KDF;
- :mod:`~kdf_remote.daemon.compat.controller`: ``GET /v1/instances/{name}/kdf-compat`` (admin);
- :mod:`~kdf_remote.daemon.compat.server`: the second uvicorn listener.

See ``docs/kdf-compat.md``.
"""

from __future__ import annotations

from kdf_remote.daemon.compat.app import CompatApp, CompatSettings
from kdf_remote.daemon.compat.controller import KdfCompatController, KdfCompatOut
from kdf_remote.daemon.compat.protocol import DEFAULT_DENY_METHODS

__all__ = [
    "DEFAULT_DENY_METHODS",
    "CompatApp",
    "CompatSettings",
    "KdfCompatController",
    "KdfCompatOut",
]
