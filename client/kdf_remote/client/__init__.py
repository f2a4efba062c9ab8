"""kdf_remote.client: drive KDF on a remote kdf-remote daemon, or on this machine, from Python.

    from kdf_remote.client import connect

    with connect("prod") as kdf:                 # a profile name; None picks the default one
        kdf.start_kdf({"gui": "my-app", "netid": 8762, "disable_p2p": True})
        print(kdf.status().state)
        print(kdf.rpc("version").result)

`connect` returns a `RemoteKdfController` for a daemon profile and a `LocalKdfController` for a
``kind: local`` profile; both offer the `KdfController` methods, so switching between them is a
profile change. `aconnect` and the ``Async*`` classes are the asyncio twins. Every error derives
from `KdfRemoteError` (the tree is drawn in `kdf_remote.client.errors`).

Names other than the exception tree are imported on first use, so importing this package stays
cheap for the CLI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# The exception tree is imported eagerly: it imports nothing itself, and every caller needs it.
from kdf_remote.client.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Conflict,
    ConnectError,
    DaemonTimeoutError,
    Forbidden,
    KdfRemoteError,
    KdfUnavailable,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unsupported,
)

if TYPE_CHECKING:
    from kdf_remote.client._async import AsyncRemoteKdfController
    from kdf_remote.client._core import DEFAULT_STARTUP_CONFIG, Backoff, RetryPolicy
    from kdf_remote.client._sync import RemoteKdfController
    from kdf_remote.client.connect import AsyncKdfController, KdfController, aconnect, connect
    from kdf_remote.client.local import AsyncLocalKdfController, LocalKdfController
    from kdf_remote.client.models import (
        Capacity,
        DaemonHealth,
        HealthEvent,
        HealthSample,
        InstanceStatus,
        LogLine,
        RpcReply,
        UpdateRequest,
        UpdateResult,
        Worker,
        WorkerRequest,
    )
    from kdf_remote.client.profiles import Profile, load_profile, resolve_profile

_WHERE = {
    "AsyncRemoteKdfController": "_async",
    "RemoteKdfController": "_sync",
    "DEFAULT_STARTUP_CONFIG": "_core",
    "Backoff": "_core",
    "RetryPolicy": "_core",
    "AsyncKdfController": "connect",
    "KdfController": "connect",
    "aconnect": "connect",
    "connect": "connect",
    "AsyncLocalKdfController": "local",
    "LocalKdfController": "local",
    "Profile": "profiles",
    "load_profile": "profiles",
    "resolve_profile": "profiles",
    **dict.fromkeys(
        (
            "Capacity",
            "DaemonHealth",
            "HealthEvent",
            "HealthSample",
            "InstanceStatus",
            "LogLine",
            "RpcReply",
            "UpdateRequest",
            "UpdateResult",
            "Worker",
            "WorkerRequest",
        ),
        "models",
    ),
}

__all__ = [
    "DEFAULT_STARTUP_CONFIG",
    "ApiError",
    "AsyncKdfController",
    "AsyncLocalKdfController",
    "AsyncRemoteKdfController",
    "Backoff",
    "BadRequest",
    "Capacity",
    "ConfigError",
    "Conflict",
    "ConnectError",
    "DaemonHealth",
    "DaemonTimeoutError",
    "Forbidden",
    "HealthEvent",
    "HealthSample",
    "InstanceStatus",
    "KdfController",
    "KdfRemoteError",
    "KdfUnavailable",
    "LocalKdfController",
    "LogLine",
    "NotFound",
    "PayloadTooLarge",
    "Profile",
    "ProtocolError",
    "RateLimited",
    "RemoteKdfController",
    "RetryPolicy",
    "RpcReply",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unsupported",
    "UpdateRequest",
    "UpdateResult",
    "Worker",
    "WorkerRequest",
    "aconnect",
    "connect",
    "load_profile",
    "resolve_profile",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
