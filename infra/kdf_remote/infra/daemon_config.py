"""Render the daemon's YAML configuration (design.md "Daemon configuration") for one server.

The file refers to secrets only by path; the one secret-derived value it holds, the API key's
SHA-256 (``key_hash``), is left out of the first-boot copy that travels in user data and filled
in by the copy delivered over SSH.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from kdf_remote.infra.layout import Layout
from kdf_remote.infra.settings import Settings

__all__ = ["API_KEY_NAME", "API_KEY_ROLE", "LOOPBACK", "DaemonConfigInput", "render_daemon_config"]

API_KEY_NAME = "deploy"
API_KEY_ROLE = "admin"
LOOPBACK = ("127.0.0.1/32", "::1/128")
"""Added to ``security.allowed_ips``: the bootstrap's final health probe runs on the server."""


@dataclass(frozen=True)
class DaemonConfigInput:
    """What varies between the servers of one stack."""

    settings: Settings
    layout: Layout
    api_key_hash: str | None = None
    """``sha256:<hex>``; None renders an empty key list (first boot, before SSH delivery)."""


def _security(data: DaemonConfigInput) -> dict[str, object]:
    layout = data.layout
    keys: list[dict[str, str]] = []
    if data.api_key_hash is not None:
        if not data.api_key_hash.startswith("sha256:"):
            raise ValueError("api_key_hash must be 'sha256:<hex>'")
        keys.append({"name": API_KEY_NAME, "role": API_KEY_ROLE, "key_hash": data.api_key_hash})
    allowed = list(data.settings.allowed_ips) + [
        c for c in LOOPBACK if c not in data.settings.allowed_ips
    ]
    return {
        "api_keys": keys,
        "allowed_ips": allowed,
        "ssl": {"cert_path": str(layout.tls_cert), "key_path": str(layout.tls_key)},
        "jwt": {"key_file": str(layout.jwt_key)},
    }


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the daemon's ``kdf.release_origins`` format)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def render_daemon_config(data: DaemonConfigInput) -> str:
    """The YAML text of ``daemon.yaml``; keys and order follow design.md."""
    settings, layout = data.settings, data.layout
    low, high = settings.worker_ports
    document: dict[str, object] = {
        "daemon": {
            "port": settings.daemon_port,
            "host": "0.0.0.0",
            "log_level": settings.log_level,
            "health_check_interval": "30s",
            "state_dir": str(layout.state_dir),
        },
        "worker_support": {
            "enabled": settings.max_workers > 0,
            "max_workers": settings.max_workers,
            "worker_ports": f"{low}-{high}",
            "worker_metrics_enabled": True,
        },
        "kdf": {
            "binary_path": str(layout.kdf_binary),
            "data_dir": str(layout.kdf_data_dir),
            "auto_restart": True,
            "max_restart_attempts": 3,
            "rpc_port": settings.kdf_rpc_port,
            # `POST /v1/kdf/update` installs releases beside the pinned one and switches
            # atomically; only the pinned release's origin is trusted for downloads.
            "bin_dir": str(layout.kdf_bin_dir),
            "release_origins": [_origin(settings.kdf.url)],
        },
        "security": _security(data),
    }
    compat = settings.kdf_compat
    if compat.enabled:
        document["kdf_compat"] = {
            "enabled": True,
            "port": compat.port,
            "instance": compat.instance,
            "deny_methods": list(compat.deny_methods),
        }
    header = "# Written by kdf-remote's Pulumi program; `pulumi up` replaces local edits.\n"
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
