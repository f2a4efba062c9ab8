"""kdf_remote.kdf: the one place that knows KDF.

Startup-config model and validation (:mod:`.config`), KDF's password policy (:mod:`.password`),
port arithmetic (:mod:`.ports`), RPC shapes (:mod:`.rpc`) and the loopback HTTP transport
(:mod:`.transport`). Imports neither litestar nor pulumi.
"""

from __future__ import annotations

from kdf_remote.kdf import rpc
from kdf_remote.kdf.config import (
    SECRET_FIELDS,
    EventStreamingConfiguration,
    KdfStartupConfig,
    WssCerts,
    decode_startup_config,
    encode_startup_config,
    validate_startup_config,
)
from kdf_remote.kdf.errors import (
    REDACTED,
    KdfConfigError,
    KdfError,
    KdfProtocolError,
    KdfRpcError,
    KdfUnreachable,
)
from kdf_remote.kdf.password import check_password, generate_rpc_password
from kdf_remote.kdf.ports import DEFAULT_RPC_PORT, MAX_NETID, p2p_ports
from kdf_remote.kdf.rpc import PUBLIC_METHODS, method_names, with_userpass
from kdf_remote.kdf.transport import KdfTransport, RawResponse

__all__ = [
    "DEFAULT_RPC_PORT",
    "MAX_NETID",
    "PUBLIC_METHODS",
    "REDACTED",
    "SECRET_FIELDS",
    "EventStreamingConfiguration",
    "KdfConfigError",
    "KdfError",
    "KdfProtocolError",
    "KdfRpcError",
    "KdfStartupConfig",
    "KdfTransport",
    "KdfUnreachable",
    "RawResponse",
    "WssCerts",
    "check_password",
    "decode_startup_config",
    "encode_startup_config",
    "generate_rpc_password",
    "method_names",
    "p2p_ports",
    "rpc",
    "validate_startup_config",
    "with_userpass",
]
