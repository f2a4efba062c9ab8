"""``kdf-remote-daemon init``: a complete, ready-to-run daemon set-up in one directory.

What :func:`init_daemon` writes under ``state_dir`` (0700)::

    daemon.yaml      the configuration (design.md schema, 0600), HTTPS only
    tls/             ca.pem, ca.key, server.pem, server.key (``tls init``; keys 0600)
    state/           daemon.state_dir: jwt.key (64 random bytes, 0600), api_keys.json (0600)
    kdf-data/        kdf.data_dir

plus one admin API key, returned once and stored only as its hash. KDF's RPC port and the worker
ports are picked free on 127.0.0.1 (the design defaults 7783 and 9000- when those are free).
The written file is loaded back and put through the daemon's own start-up checks before the key
is created, so a set-up that ``init`` reports as done is one the daemon accepts.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import yaml

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.certs import init_tls, parse_san
from kdf_remote.daemon.security.errors import SecurityConfigError, SecurityError
from kdf_remote.daemon.security.files import write_private_file
from kdf_remote.daemon.security.ipaccess import ip_network
from kdf_remote.daemon.security.keystore import add_key
from kdf_remote.daemon.security.preflight import check_security
from kdf_remote.daemon.security.tls import is_loopback_host
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import SettingsError, load_settings

__all__ = ["InitOptions", "InitResult", "init_daemon"]

CONFIG_NAME: Final = "daemon.yaml"
DEFAULT_RPC_PORT: Final = 7783
DEFAULT_WORKER_BASE: Final = 9000
_PORT_ATTEMPTS: Final = 50
_LOOPBACK_NAMES: Final = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    """Inputs of ``kdf-remote-daemon init``."""

    state_dir: Path
    """Everything is written under this directory (created 0700)."""
    kdf_binary: Path
    host: str = "127.0.0.1"
    port: int = 8000
    sans: Sequence[str] = ()
    """Names the certificate is valid for; default: ``host`` (and ``localhost`` on loopback)."""
    allowed_ips: Sequence[str] = ()
    """``security.allowed_ips``; empty admits any address (TLS and keys still apply)."""
    max_workers: int = 10
    admin_name: str = "admin"
    extra_avoid: frozenset[int] = field(default_factory=frozenset)
    """Ports not to pick for KDF (besides ``port``)."""


class InitResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``init --json`` prints: the only time ``api_key`` is shown."""

    config_path: str
    api_key: str
    ca_cert_path: str
    url: str


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_range(count: int, preferred: int, avoid: set[int]) -> tuple[int, int]:
    """``count`` consecutive ports free on 127.0.0.1 and not in ``avoid``: ``preferred`` first."""
    for attempt in range(_PORT_ATTEMPTS):
        base = preferred if attempt == 0 else _kernel_port()
        ports = range(base, base + count)
        if ports[-1] < 65536 and not avoid.intersection(ports) and all(map(_port_free, ports)):
            return base, ports[-1]
    raise SecurityConfigError(
        "init", f"{count} consecutive ports", "free TCP ports on 127.0.0.1 for KDF"
    )


def _sans(options: InitOptions) -> list[str]:
    if options.sans:
        return list(options.sans)
    host = options.host.strip()
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified:
        raise SecurityConfigError(
            "--san", "none", f"the public name or address clients use (--host is {host})"
        )
    return [host, "localhost"] if is_loopback_host(host) and host != "localhost" else [host]


def _url(name: str, port: int) -> str:
    try:
        is_v6 = isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address)
    except ValueError:
        is_v6 = False
    return f"https://[{name}]:{port}" if is_v6 else f"https://{name}:{port}"


def _allowed_hosts(sans: Sequence[str]) -> list[str]:
    """The certificate's names, plus loopback for probes run on the machine itself.

    Clients must use one of the certificate's names anyway; listing them also refuses a
    request under any other ``Host`` (a DNS-rebinding page aiming a browser at the daemon).
    """
    names = [str(name).strip().lower() for name in sans]
    return names + [name for name in _LOOPBACK_NAMES if name not in names]


def _config_document(
    options: InitOptions,
    root: Path,
    *,
    tls_dir: Path,
    rpc_port: int,
    workers: tuple[int, int],
    sans: Sequence[str],
) -> dict[str, object]:
    """The daemon YAML (design.md schema) as plain data."""
    state = root / "state"
    security: dict[str, object] = {
        "api_keys": [],
        "allowed_hosts": _allowed_hosts(sans),
        "ssl": {
            "cert_path": str(tls_dir / "server.pem"),
            "key_path": str(tls_dir / "server.key"),
        },
        "jwt": {"key_file": str(state / "jwt.key")},
    }
    if options.allowed_ips:
        security["allowed_ips"] = [str(ip_network(cidr)) for cidr in options.allowed_ips]
    return {
        "daemon": {
            "host": options.host,
            "port": options.port,
            "state_dir": str(state),
            "log_level": "info",
        },
        "worker_support": {
            "enabled": options.max_workers > 0,
            "max_workers": options.max_workers,
            "worker_ports": f"{workers[0]}-{workers[1]}",
        },
        "kdf": {
            "binary_path": str(options.kdf_binary.expanduser().resolve()),
            "data_dir": str(root / "kdf-data"),
            "rpc_port": rpc_port,
        },
        "security": security,
    }


def _validate(options: InitOptions) -> None:
    if not 1 <= options.port <= 65535:
        raise SecurityConfigError("--port", options.port, "a TCP port (1-65535)")
    if options.max_workers < 0:
        raise SecurityConfigError("--max-workers", options.max_workers, "an integer >= 0")
    for san in options.sans:
        parse_san(san)
    for cidr in options.allowed_ips:
        try:
            ip_network(cidr)
        except ValueError:
            raise SecurityConfigError(
                "--allowed-ip", cidr, "a CIDR such as 203.0.113.0/24"
            ) from None


def init_daemon(options: InitOptions) -> InitResult:
    """Write a complete daemon set-up under ``options.state_dir`` and create its admin key.

    Raises:
        SecurityError: a bad option, a directory already initialised, certificates that cannot
            be made, or a written configuration the daemon would refuse (named).
    """
    _validate(options)
    root = options.state_dir.expanduser().resolve()
    config_path = root / CONFIG_NAME
    if config_path.exists():
        raise SecurityConfigError(
            "--state-dir", str(root), f"a directory without {CONFIG_NAME} (already initialised)"
        )
    sans = _sans(options)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    tls = init_tls(root / "tls", sans)
    avoid = {options.port, *options.extra_avoid}
    rpc_port = _free_range(1, DEFAULT_RPC_PORT, avoid)[0]
    workers = _free_range(max(1, options.max_workers), DEFAULT_WORKER_BASE, avoid | {rpc_port})
    document = _config_document(
        options,
        root,
        tls_dir=Path(tls.ca_cert).parent,
        rpc_port=rpc_port,
        workers=workers,
        sans=sans,
    )
    (root / "kdf-data").mkdir(mode=0o700, exist_ok=True)
    write_private_file(
        config_path, yaml.safe_dump(document, sort_keys=False).encode(), overwrite=False
    )
    try:
        settings = load_settings(config_path)
    except SettingsError as exc:
        raise SecurityConfigError(str(config_path), "the written configuration", str(exc)) from None
    create_jwt_key_file(settings.security.jwt.key_file)
    report = check_security(settings)
    if report.errors:
        raise SecurityError(f"{config_path}: " + "; ".join(report.errors))
    admin = add_key(settings.security.keys_file, name=options.admin_name, role=Role.ADMIN)
    return InitResult(
        config_path=str(config_path),
        api_key=admin.key,
        ca_cert_path=tls.ca_cert,
        url=_url(sans[0], options.port),
    )
