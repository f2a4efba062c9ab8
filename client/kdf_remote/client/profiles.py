"""Connection profiles: where the daemon is, how to authenticate, which CA to pin.

A profile is one YAML file, mode 0600, in ``$XDG_CONFIG_HOME/kdf-remote/profiles/<name>.yaml``;
its CA certificate, when it has one, sits beside it as ``<name>.ca.pem``. Two shapes are read:

- the profile shape written by this module (``kind``, ``url``, ``api_key``, ``ca_cert``, ...);
- the seed's client YAML, ``remote: {host, port, api_key, ssl, timeout, ca_cert}``.

A profile of ``kind: local`` runs KDF on this machine through the in-process supervisor instead
of talking to a daemon (see `kdf_remote.client.local`).

Selection order: an explicit name (``--profile``), then ``KDF_REMOTE_PROFILE``, then the one
marked current by ``profile use``, then the only profile if exactly one exists.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from kdf_remote.client.errors import ConfigError

__all__ = [
    "LocalSettings",
    "Profile",
    "SdkRemoteConfig",
    "StackOutputs",
    "WorkerEndpoint",
    "config_dir",
    "current_profile_name",
    "data_dir",
    "delete_profile",
    "list_profiles",
    "load_profile",
    "parse_duration",
    "profile_from_outputs",
    "profiles_dir",
    "read_profile_file",
    "remote_config_from_url",
    "resolve_profile",
    "save_profile",
    "sdk_remote_config",
    "set_current_profile",
]

ENV_PROFILE = "KDF_REMOTE_PROFILE"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class WorkerEndpoint(msgspec.Struct, kw_only=True):
    """A worker server from the stack outputs."""

    name: str
    region: str | None = None
    daemon_url: str | None = None
    server_ip: str | None = None


class LocalSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where an in-process local KDF lives (profile ``kind: local``)."""

    binary_path: str
    data_dir: str
    run_dir: str
    rpc_port: int = 7783


class Profile(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One way to reach a KDF: a daemon URL with credentials, or a local in-process supervisor."""

    name: str
    kind: Literal["daemon", "local"] = "daemon"
    url: str | None = None
    api_key: str | None = None
    ca_cert: str | None = None
    """Path of the CA certificate (PEM) to pin; relative paths are relative to the profile file."""
    timeout: float = 30.0
    sign: bool = False
    """Sign every request (X-KDF-Signature) with a key derived from the API key."""
    provider: str | None = None
    region: str | None = None
    server_ip: str | None = None
    instance_id: str | None = None
    stack: str | None = None
    kdf_rpc_url: str | None = None
    """The daemon's KDF-compatible listener (``kdf_compat``), for apps on the Komodo DeFi SDK."""
    workers: list[WorkerEndpoint] = msgspec.field(default_factory=list)
    local: LocalSettings | None = None

    def ca_pem(self) -> str | None:
        """The pinned CA certificate's PEM text, or None when the profile pins none."""
        if self.ca_cert is None:
            return None
        path = Path(self.ca_cert).expanduser()
        if not path.is_absolute():
            path = profiles_dir() / path
        try:
            return path.read_text(encoding="ascii")
        except OSError as exc:
            raise ConfigError(
                f"profile {self.name!r}: ca_cert {str(path)!r} cannot be read: {exc.strerror}",
                field="ca_cert",
            ) from exc


class SdkRemoteConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The Komodo DeFi SDK's ``RemoteConfig`` values that reach the ``kdf_compat`` listener.

    Field names are the SDK's JSON names (``RemoteConfig.toJson``). ``rpc_password`` is only
    filled in when asked for (``kdf-remote profile show --show-secret``).
    """

    ip_address: str
    port: int
    https: bool
    rpc_password: str | None = None

    def __repr__(self) -> str:
        shown = "***" if self.rpc_password else None
        return (
            f"SdkRemoteConfig(ip_address={self.ip_address!r}, port={self.port}, "
            f"https={self.https}, rpc_password={shown})"
        )


class StackOutputs(msgspec.Struct, kw_only=True):
    """The stack-output contract (design.md, "Stack outputs")."""

    daemon_url: str
    ca_cert_pem: str | None = None
    api_key: str | None = None
    server_ip: str | None = None
    region: str | None = None
    provider: str | None = None
    instance_id: str | None = None
    workers: list[WorkerEndpoint] = msgspec.field(default_factory=list)
    kdf_rpc_url: str | None = None


# --- locations ---------------------------------------------------------------------------------


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/kdf-remote`` (``~/.config/kdf-remote`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kdf-remote"


def data_dir() -> Path:
    """``$XDG_DATA_HOME/kdf-remote`` (``~/.local/share/kdf-remote`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kdf-remote"


def profiles_dir() -> Path:
    """The directory holding one YAML file per profile."""
    return config_dir() / "profiles"


def _profile_path(name: str) -> Path:
    return profiles_dir() / f"{check_name(name)}.yaml"


def check_name(name: str) -> str:
    """Return `name` if it is a valid profile name, else raise `ConfigError`."""
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"profile name {name!r} is not valid: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)",
            field="name",
        )
    return name


# --- value parsing ------------------------------------------------------------------------------


def parse_duration(value: object, *, field: str) -> float:
    """Seconds from a number or a string with an ``ms|s|m|h`` suffix (``30s``, ``1.5m``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration like '30s', got {value!r}", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ConfigError(f"{field}: expected a duration like '30s', got {value!r}", field=field)
    if seconds <= 0:
        raise ConfigError(f"{field}: must be positive, got {value!r}", field=field)
    return seconds


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, field: str = "url") -> str:
    """Validate a daemon base URL: https anywhere, plain http only to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{field}: expected https://HOST[:PORT], got {url!r}", field=field)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"{field}: plain http is only allowed to a loopback host, got {url!r}; use https",
            field=field,
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{field}: expected a base URL without a path, got {url!r}", field=field)
    return url.rstrip("/")


# --- reading ------------------------------------------------------------------------------------


def _seed_to_profile(name: str, remote: object) -> dict[str, Any]:
    """Turn the seed's ``remote: {host, port, api_key, ssl, timeout, ca_cert}`` into fields."""
    if not isinstance(remote, dict):
        raise ConfigError("remote: expected a mapping", field="remote")
    known = {"host", "port", "api_key", "ssl", "timeout", "ca_cert", "sign"}
    unknown = sorted(set(remote) - known)
    if unknown:
        raise ConfigError(f"remote.{unknown[0]}: unknown key", field=f"remote.{unknown[0]}")
    host = remote.get("host")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"remote.host: expected a host name, got {host!r}", field="remote.host")
    port = remote.get("port", 8000)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"remote.port: expected 1-65535, got {port!r}", field="remote.port")
    use_tls = remote.get("ssl", True)
    if not isinstance(use_tls, bool):
        raise ConfigError(
            f"remote.ssl: expected true or false, got {use_tls!r}", field="remote.ssl"
        )
    shown_host = f"[{host}]" if ":" in host else host
    fields: dict[str, Any] = {
        "name": name,
        "url": f"{'https' if use_tls else 'http'}://{shown_host}:{port}",
    }
    for key in ("api_key", "ca_cert", "sign", "timeout"):
        if key in remote:
            fields[key] = remote[key]
    return fields


def profile_from_mapping(name: str, raw: object, *, source: str) -> Profile:
    """Validate a decoded YAML document (either shape) into a `Profile`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping")
    data: dict[str, Any] = (
        _seed_to_profile(name, raw["remote"]) if "remote" in raw else {**raw, "name": name}
    )
    if "timeout" in data:
        data["timeout"] = parse_duration(data["timeout"], field="timeout")
    unknown = sorted(set(data) - set(Profile.__struct_fields__))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}", field=unknown[0])
    try:
        profile = msgspec.convert(data, Profile, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return validate_profile(profile, source=source)


def validate_profile(profile: Profile, *, source: str) -> Profile:
    """Cross-field checks: a daemon profile needs a URL, a local one its settings."""
    if profile.kind == "daemon":
        if not profile.url:
            raise ConfigError(f"{source}: url: required for a daemon profile", field="url")
        check_url(profile.url)
    elif profile.local is None:
        raise ConfigError(f"{source}: local: required for a local profile", field="local")
    if profile.kdf_rpc_url is not None:
        remote_config_from_url(profile.kdf_rpc_url)
    return profile


def remote_config_from_url(url: str, *, field: str = "kdf_rpc_url") -> SdkRemoteConfig:
    """The SDK's ``RemoteConfig`` address, port and TLS flag of a listener URL.

    Same rule as the daemon URL: https anywhere, plain http only to a loopback host (an SDK
    app sends the rpc_password in every request).
    """
    parts = urlsplit(check_url(url, field=field))
    host = parts.hostname
    assert host is not None  # check_url refused a URL without one
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{field}: bad port in {url!r}", field=field) from None
    https = parts.scheme == "https"
    return SdkRemoteConfig(ip_address=host, port=port or (443 if https else 80), https=https)


def sdk_remote_config(profile: Profile) -> SdkRemoteConfig | None:
    """The profile's ``RemoteConfig`` values (without the password), when it has a listener."""
    if profile.kdf_rpc_url is None:
        return None
    return remote_config_from_url(profile.kdf_rpc_url)


def read_profile_file(path: Path, *, name: str | None = None) -> Profile:
    """Read a profile (or seed client YAML) from any file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return profile_from_mapping(name or path.stem, raw, source=str(path))


def load_profile(name: str) -> Profile:
    """Load the stored profile `name`."""
    path = _profile_path(name)
    if not path.exists():
        known = ", ".join(list_profiles()) or "none"
        raise ConfigError(f"no profile named {name!r} (known: {known})", field="profile")
    return read_profile_file(path, name=name)


def list_profiles() -> list[str]:
    """Names of the stored profiles, sorted."""
    directory = profiles_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml") if _NAME_RE.match(p.stem))


def current_profile_name() -> str | None:
    """The profile marked current by `set_current_profile`, if any."""
    try:
        name = (config_dir() / "current").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name or None


def resolve_profile(explicit: str | None = None) -> Profile:
    """Pick the profile: explicit name or file path, env, current, or the only one."""
    if explicit and (explicit.endswith((".yaml", ".yml")) or os.sep in explicit):
        return read_profile_file(Path(explicit).expanduser())
    name = explicit or os.environ.get(ENV_PROFILE) or current_profile_name()
    if name:
        return load_profile(name)
    names = list_profiles()
    if len(names) == 1:
        return load_profile(names[0])
    if not names:
        raise ConfigError(
            "no profile: run `kdf-remote deploy --provider local`, `kdf-remote profile import` "
            "or `kdf-remote profile add` first",
            field="profile",
        )
    raise ConfigError(
        f"several profiles ({', '.join(names)}): choose one with --profile, "
        f"{ENV_PROFILE} or `kdf-remote profile use NAME`",
        field="profile",
    )


# --- writing ------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` atomically to `path` with mode 0600 (the directory 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_profile(profile: Profile, *, ca_pem: str | None = None) -> Path:
    """Store `profile` (and its CA PEM beside it when given); returns the profile file's path."""
    import yaml

    check_name(profile.name)
    if ca_pem is not None:
        if "BEGIN CERTIFICATE" not in ca_pem:
            raise ConfigError("ca_cert_pem: not a PEM certificate", field="ca_cert_pem")
        ca_name = f"{profile.name}.ca.pem"
        _write_private(profiles_dir() / ca_name, ca_pem.encode("ascii"))
        profile = msgspec.structs.replace(profile, ca_cert=ca_name)
    validate_profile(profile, source=f"profile {profile.name!r}")
    document = msgspec.to_builtins(profile)
    document.pop("name", None)
    text = yaml.safe_dump(document, sort_keys=False)
    path = _profile_path(profile.name)
    _write_private(path, text.encode("utf-8"))
    return path


def delete_profile(name: str) -> None:
    """Remove a stored profile, its CA file, and the current marker if it pointed at it."""
    path = _profile_path(name)
    if not path.exists():
        raise ConfigError(f"no profile named {name!r}", field="profile")
    path.unlink()
    (profiles_dir() / f"{name}.ca.pem").unlink(missing_ok=True)
    if current_profile_name() == name:
        (config_dir() / "current").unlink(missing_ok=True)


def set_current_profile(name: str) -> None:
    """Mark `name` as the profile used when none is chosen explicitly."""
    if not _profile_path(name).exists():
        raise ConfigError(f"no profile named {name!r}", field="profile")
    _write_private(config_dir() / "current", f"{name}\n".encode())


# --- stack outputs ------------------------------------------------------------------------------


def decode_stack_outputs(raw: bytes | dict[str, Any], *, source: str) -> StackOutputs:
    """Validate stack outputs (JSON bytes or a mapping) against the contract."""
    try:
        if isinstance(raw, bytes | bytearray):
            return msgspec.json.decode(raw, type=StackOutputs)
        return msgspec.convert(raw, StackOutputs)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: stack outputs do not match the contract: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None


def profile_from_outputs(
    name: str, outputs: StackOutputs, *, stack: str | None = None
) -> tuple[Profile, str | None]:
    """Build a profile (and the CA PEM to store beside it) from stack outputs."""
    url = check_url(outputs.daemon_url, field="daemon_url")
    profile = Profile(
        name=check_name(name),
        url=url,
        api_key=outputs.api_key,
        provider=outputs.provider,
        region=outputs.region,
        server_ip=outputs.server_ip,
        instance_id=outputs.instance_id,
        stack=stack,
        kdf_rpc_url=outputs.kdf_rpc_url,
        workers=list(outputs.workers),
    )
    return profile, outputs.ca_cert_pem
