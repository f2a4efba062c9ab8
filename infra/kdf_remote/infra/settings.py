"""Typed stack settings, validated once from the ``kdf-remote:`` configuration namespace.

Pulumi hands configuration over as strings (structured values as JSON text). :func:`parse_settings`
turns that flat mapping into frozen dataclasses and raises :class:`SettingsError` naming the
offending key (``kdf-remote:allowed_ips[1]``), the value and what was expected. Nothing
downstream reads configuration again. Secret values are never echoed in messages.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal, cast

from kdf_remote.kdf.ports import DEPRECATED_NETIDS, MAX_NETID

__all__ = [
    "KNOWN_KEYS",
    "NAMESPACE",
    "CustomHost",
    "DnsSettings",
    "KdfCompatSettings",
    "KdfRelease",
    "P2PSettings",
    "Provider",
    "Requirements",
    "Settings",
    "SettingsError",
    "TlsSettings",
    "WorkerSpec",
    "parse_settings",
]

NAMESPACE = "kdf-remote"
Provider = Literal["aws", "do", "custom"]
CloudProvider = Literal["aws", "do"]
TlsMode = Literal["self_signed", "letsencrypt"]

_PROVIDERS: tuple[Provider, ...] = ("aws", "do", "custom")
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_DO_REGION = re.compile(r"^[a-z]{3}\d$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_INSTANCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_WORD = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.:/=+@-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z._+-]{1,64}$")
# A pip requirement pinned with ==, or a local/remote wheel or project path; the value ends up
# in a shell script (quoted), so whitespace and shell metacharacters are refused outright.
_PACKAGE = re.compile(
    r"^(kdf-remote\[daemon\]==[0-9A-Za-z.+-]+|[A-Za-z0-9_./:@%+=~\[\]-]+\.whl|/[A-Za-z0-9_./+-]+(\[daemon\])?)$"
)
_PORT_RANGE = re.compile(r"^(\d{1,5})-(\d{1,5})$")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SECRET_KEYS = frozenset({"ssh_private_key"})
_STRUCTURED_KEYS = frozenset(
    {
        "allowed_ips",
        "ssh_allowed_ips",
        "ssh_public_keys",
        "custom_host",
        "p2p",
        "kdf_compat",
        "dns",
        "tls",
        "fleet",
        "tags",
        "requirements",
    }
)
_WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

KNOWN_KEYS = frozenset(
    {
        "provider",
        "region",
        "size",
        "image",
        "ssh_user",
        "ssh_public_keys",
        "ssh_private_key",
        "custom_host",
        "allowed_ips",
        "ssh_allowed_ips",
        "daemon_port",
        "log_level",
        "kdf_version",
        "kdf_url",
        "kdf_sha256",
        "kdf_rpc_port",
        "netid",
        "p2p",
        "worker_ports",
        "max_workers",
        "kdf_compat",
        "dns",
        "tls",
        "fleet",
        "package",
        "tags",
        "requirements",
        "manage_firewall",
    }
)
"""Every key of the ``kdf-remote:`` namespace; anything else is a typo and fails validation."""


class SettingsError(ValueError):
    """A stack configuration value is missing or wrong; the message names the key."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key = f"{NAMESPACE}:{key}"
        self.value = value
        self.expected = expected
        if value is None:
            super().__init__(f"{self.key}: missing, expected {expected}")
            return
        shown = (
            "<secret>"
            if key.split("[", maxsplit=1)[0].split(".", maxsplit=1)[0] in _SECRET_KEYS
            else repr(value)
        )
        super().__init__(f"{self.key}: got {shown}, expected {expected}")


def _missing(key: str, expected: str) -> SettingsError:
    return SettingsError(key, None, expected)


@dataclass(frozen=True)
class KdfRelease:
    """The pinned KDF release installed on every server (kdf-facts 4.4: pin URL and sha256)."""

    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class CustomHost:
    """An existing server reached over SSH (provider ``custom``)."""

    host: str
    user: str
    port: int = 22


@dataclass(frozen=True)
class DnsSettings:
    """An optional DNS record for the primary: ``zone`` is a Route 53 zone id or a DO domain."""

    zone: str
    fqdn: str


@dataclass(frozen=True)
class TlsSettings:
    """How the daemon gets its certificate: a Pulumi-made private CA, or Let's Encrypt."""

    mode: TlsMode = "self_signed"
    email: str | None = None


@dataclass(frozen=True)
class KdfCompatSettings:
    """design.md ``kdf_compat``: a KDF-protocol listener for SDK apps (off by default)."""

    enabled: bool = False
    port: int | None = None
    instance: str = "main"
    deny_methods: tuple[str, ...] = ("stop",)


@dataclass(frozen=True)
class P2PSettings:
    """KDF's P2P listener; its ports come from the netid and are opened only when enabled."""

    enabled: bool = False
    allowed_ips: tuple[str, ...] = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class Requirements:
    """The minimum a server must offer; the bootstrap refuses to install on less."""

    min_memory_mb: int = 900
    min_disk_mb: int = 4096
    min_python: tuple[int, int] = (3, 11)


@dataclass(frozen=True)
class WorkerSpec:
    """``count`` fleet workers of one provider in one region."""

    provider: CloudProvider
    region: str
    count: int = 1
    size: str | None = None


@dataclass(frozen=True)
class Settings:
    """The whole ``kdf-remote:`` namespace of one stack, validated."""

    provider: Provider
    region: str
    allowed_ips: tuple[str, ...]
    ssh_allowed_ips: tuple[str, ...]
    kdf: KdfRelease
    package: str
    size: str | None = None
    image: str | None = None
    ssh_user: str | None = None
    ssh_public_keys: tuple[str, ...] = ()
    custom_host: CustomHost | None = None
    daemon_port: int = 8000
    log_level: str = "info"
    kdf_rpc_port: int = 7783
    netid: int = 8762
    p2p: P2PSettings = P2PSettings()
    worker_ports: tuple[int, int] = (9000, 9010)
    max_workers: int = 10
    kdf_compat: KdfCompatSettings = KdfCompatSettings()
    dns: DnsSettings | None = None
    tls: TlsSettings = TlsSettings()
    fleet: tuple[WorkerSpec, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    requirements: Requirements = Requirements()
    manage_firewall: bool = True


# ------------------------------------------------------------------------------------------------
# Value readers: each takes the key (for messages) and a decoded JSON value.


def _decode(key: str, raw: str) -> object:
    """Pulumi passes structured values as JSON text; scalars stay text (parsed by their reader)."""
    if key not in _STRUCTURED_KEYS:
        return raw
    try:
        return cast("object", json.loads(raw))
    except json.JSONDecodeError:
        raise SettingsError(key, raw, "valid JSON for a structured value") from None


def _str(key: str, value: object, expected: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(key, value, expected)
    return value.strip()


def _match(key: str, value: object, pattern: re.Pattern[str], expected: str) -> str:
    text = _str(key, value, expected)
    if not pattern.fullmatch(text):
        raise SettingsError(key, value, expected)
    return text


def _int(key: str, value: object, low: int, high: int) -> int:
    parsed: object = value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        parsed = int(value.strip())
    if isinstance(parsed, bool) or not isinstance(parsed, int) or not low <= parsed <= high:
        raise SettingsError(key, value, f"an integer in {low}..{high}")
    return parsed


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SettingsError(key, value, "true or false")


def _port(key: str, value: object) -> int:
    return _int(key, value, 1, 65535)


def _list(key: str, value: object) -> list[object]:
    if not isinstance(value, list):
        raise SettingsError(key, value, "a list")
    return cast("list[object]", value)


def _object(key: str, value: object, allowed: Sequence[str]) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise SettingsError(key, value, f"an object with keys {', '.join(allowed)}")
    mapping = cast("dict[str, object]", value)
    for name in mapping:
        if name not in allowed:
            raise SettingsError(
                f"{key}.{name}", mapping[name], f"one of the keys {', '.join(allowed)}"
            )
    return mapping


def _cidr(key: str, value: object, *, world_ok: bool) -> str:
    text = _str(key, value, "a CIDR such as 203.0.113.7/32 or 2001:db8::/64")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise SettingsError(key, value, "a CIDR such as 203.0.113.7/32 (host bits clear)") from None
    if not world_ok and network in _WORLD:
        raise SettingsError(
            key, value, "a narrower CIDR: the daemon and SSH are never opened to the whole internet"
        )
    return str(network)


def _cidrs(key: str, value: object, *, world_ok: bool, non_empty: bool) -> tuple[str, ...]:
    items = _list(key, value)
    if non_empty and not items:
        raise SettingsError(key, value, "at least one CIDR")
    cidrs = tuple(_cidr(f"{key}[{i}]", item, world_ok=world_ok) for i, item in enumerate(items))
    if len(set(cidrs)) != len(cidrs):
        raise SettingsError(key, value, "CIDRs without repeats")
    return cidrs


def _region(key: str, value: object, provider: Provider) -> str:
    if provider == "aws":
        return _match(key, value, _AWS_REGION, "an AWS region such as us-east-1")
    if provider == "do":
        return _match(key, value, _DO_REGION, "a DigitalOcean region slug such as fra1")
    return _match(key, value, _WORD, "a label for the host's location, e.g. home")


def _port_range(key: str, value: object) -> tuple[int, int]:
    text = _str(key, value, "a port range A-B such as 9000-9010")
    match = _PORT_RANGE.fullmatch(text)
    if match is None:
        raise SettingsError(key, value, "a port range A-B such as 9000-9010")
    low, high = int(match.group(1)), int(match.group(2))
    if not 1024 <= low <= high <= 65535:
        raise SettingsError(key, value, "a port range A-B with 1024 <= A <= B <= 65535")
    return low, high


# ------------------------------------------------------------------------------------------------
# Sections


def _release(raw: Mapping[str, object]) -> KdfRelease:
    for key in ("kdf_version", "kdf_url", "kdf_sha256"):
        if key not in raw:
            raise _missing(key, "the pinned KDF release (kdf_version, kdf_url, kdf_sha256)")
    url = _str("kdf_url", raw["kdf_url"])
    if not url.startswith("https://") or any(c.isspace() or c in "'\"`$\\" for c in url):
        raise SettingsError("kdf_url", url, "an https:// URL of the release zip")
    return KdfRelease(
        version=_match(
            "kdf_version", raw["kdf_version"], _VERSION, "a version label such as 2.5.1-beta"
        ),
        url=url,
        sha256=_match(
            "kdf_sha256", raw["kdf_sha256"], _SHA256, "64 lowercase hex digits (sha256 of the zip)"
        ),
    )


def _custom_host(raw: Mapping[str, object]) -> CustomHost:
    if "custom_host" not in raw:
        raise _missing("custom_host", "{host, user, port} of the existing server")
    obj = _object("custom_host", raw["custom_host"], ("host", "user", "port"))
    if "host" not in obj:
        raise _missing("custom_host.host", "the server's address or DNS name")
    host = _str("custom_host.host", obj["host"])
    try:
        ipaddress.ip_address(host)
    except ValueError:
        _match("custom_host.host", host, _HOSTNAME, "an IP address or DNS name")
    return CustomHost(
        host=host,
        user=_match("custom_host.user", obj.get("user", "root"), _USER, "a Unix user name"),
        port=_port("custom_host.port", obj.get("port", 22)),
    )


def _dns(raw: Mapping[str, object], provider: Provider) -> DnsSettings | None:
    if "dns" not in raw:
        return None
    obj = _object("dns", raw["dns"], ("zone", "fqdn"))
    if provider == "custom":
        raise SettingsError(
            "dns", raw["dns"], "no dns for provider custom (manage the record yourself)"
        )
    for name in ("zone", "fqdn"):
        if name not in obj:
            raise _missing(f"dns.{name}", "both zone and fqdn")
    fqdn = _match(
        "dns.fqdn", obj["fqdn"], _DNS_NAME, "a lowercase DNS name such as kdf.example.com"
    )
    if provider == "aws":
        zone = _match(
            "dns.zone",
            obj["zone"],
            re.compile(r"^Z[A-Z0-9]{4,32}$"),
            "a Route 53 hosted zone id (Z...)",
        )
    else:
        zone = _match(
            "dns.zone", obj["zone"], _DNS_NAME, "the DigitalOcean domain, e.g. example.com"
        )
        if not fqdn.endswith("." + zone):
            raise SettingsError("dns.fqdn", fqdn, f"a name inside the domain {zone}")
    return DnsSettings(zone=zone, fqdn=fqdn)


def _tls(raw: Mapping[str, object], dns: DnsSettings | None) -> TlsSettings:
    if "tls" not in raw:
        return TlsSettings()
    obj = _object("tls", raw["tls"], ("mode", "email"))
    mode = obj.get("mode", "self_signed")
    if mode not in ("self_signed", "letsencrypt"):
        raise SettingsError("tls.mode", mode, "self_signed or letsencrypt")
    if mode == "self_signed":
        return TlsSettings()
    if dns is None:
        raise _missing("dns", "a dns record: Let's Encrypt certifies a DNS name, not an IP")
    if "email" not in obj:
        raise _missing("tls.email", "a contact e-mail for the Let's Encrypt account")
    email = _match(
        "tls.email",
        obj["email"],
        re.compile(r"^[^@\s'\"`$\\]+@[^@\s'\"`$\\]+\.[a-z]{2,}$"),
        "an e-mail address",
    )
    return TlsSettings(mode="letsencrypt", email=email)


def _kdf_compat(raw: Mapping[str, object]) -> KdfCompatSettings:
    if "kdf_compat" not in raw:
        return KdfCompatSettings()
    obj = _object("kdf_compat", raw["kdf_compat"], ("enabled", "port", "instance", "deny_methods"))
    enabled = _bool("kdf_compat.enabled", obj.get("enabled", False))
    port = _port("kdf_compat.port", obj["port"]) if "port" in obj else None
    if enabled and port is None:
        raise _missing("kdf_compat.port", "the TCP port of the KDF-compatible listener")
    deny = obj.get("deny_methods", ["stop"])
    methods = tuple(
        _match(
            f"kdf_compat.deny_methods[{i}]",
            m,
            re.compile(r"^[A-Za-z0-9_:.]{1,64}$"),
            "a KDF method name",
        )
        for i, m in enumerate(_list("kdf_compat.deny_methods", deny))
    )
    return KdfCompatSettings(
        enabled=enabled,
        port=port,
        instance=_match(
            "kdf_compat.instance", obj.get("instance", "main"), _INSTANCE, "an instance name"
        ),
        deny_methods=methods,
    )


def _p2p(raw: Mapping[str, object]) -> P2PSettings:
    if "p2p" not in raw:
        return P2PSettings()
    obj = _object("p2p", raw["p2p"], ("enabled", "allowed_ips"))
    default = P2PSettings()
    allowed = (
        _cidrs("p2p.allowed_ips", obj["allowed_ips"], world_ok=True, non_empty=True)
        if "allowed_ips" in obj
        else default.allowed_ips
    )
    return P2PSettings(enabled=_bool("p2p.enabled", obj.get("enabled", False)), allowed_ips=allowed)


def _fleet(raw: Mapping[str, object], provider: Provider) -> tuple[WorkerSpec, ...]:
    if "fleet" not in raw:
        return ()
    obj = _object("fleet", raw["fleet"], ("workers",))
    items = _list("fleet.workers", obj.get("workers", []))
    specs: list[WorkerSpec] = []
    for i, item in enumerate(items):
        key = f"fleet.workers[{i}]"
        spec = _object(key, item, ("provider", "region", "count", "size"))
        worker_provider = spec.get("provider", provider)
        if worker_provider not in ("aws", "do"):
            raise SettingsError(
                f"{key}.provider", worker_provider, "aws or do (fleet workers are cloud servers)"
            )
        cloud: CloudProvider = "aws" if worker_provider == "aws" else "do"
        if "region" not in spec:
            raise _missing(f"{key}.region", "the region of these workers")
        specs.append(
            WorkerSpec(
                provider=cloud,
                region=_region(f"{key}.region", spec["region"], cloud),
                count=_int(f"{key}.count", spec.get("count", 1), 1, 20),
                size=_match(f"{key}.size", spec["size"], _WORD, "a server size")
                if "size" in spec
                else None,
            )
        )
    pairs = [(s.provider, s.region) for s in specs]
    if len(set(pairs)) != len(pairs):
        raise SettingsError("fleet.workers", items, "one entry per provider and region (use count)")
    return tuple(specs)


def _tags(raw: Mapping[str, object]) -> dict[str, str]:
    if "tags" not in raw:
        return {}
    value = raw["tags"]
    if not isinstance(value, dict):
        raise SettingsError("tags", value, "an object of tag names to values")
    tags: dict[str, str] = {}
    for name, tag_value in cast("dict[str, object]", value).items():
        _match(f"tags.{name}", name, _TAG_KEY, "a tag name of letters, digits and _.:/=+@-")
        tags[name] = _match(
            f"tags.{name}", tag_value, re.compile(r"^[A-Za-z0-9_.:/=+@ -]{0,255}$"), "a tag value"
        )
    return tags


def _requirements(raw: Mapping[str, object]) -> Requirements:
    if "requirements" not in raw:
        return Requirements()
    obj = _object("requirements", raw["requirements"], ("min_memory_mb", "min_disk_mb"))
    d = Requirements()
    return Requirements(
        min_memory_mb=_int(
            "requirements.min_memory_mb", obj.get("min_memory_mb", d.min_memory_mb), 256, 1 << 22
        ),
        min_disk_mb=_int(
            "requirements.min_disk_mb", obj.get("min_disk_mb", d.min_disk_mb), 512, 1 << 24
        ),
    )


def _default_package() -> str:
    # The server runs the same release as the client that deploys it.
    return f"kdf-remote[daemon]=={metadata.version('kdf-remote')}"


def _check_ports(settings: Settings) -> None:
    """Refuse port layouts that would expose KDF's RPC or collide on the server."""
    low, high = settings.worker_ports
    if low <= settings.kdf_rpc_port <= high:
        raise SettingsError(
            "kdf_rpc_port", settings.kdf_rpc_port, f"a port outside worker_ports {low}-{high}"
        )
    if settings.daemon_port == settings.kdf_rpc_port:
        raise SettingsError(
            "daemon_port",
            settings.daemon_port,
            "a port other than kdf_rpc_port (KDF's RPC is never exposed)",
        )
    if low <= settings.daemon_port <= high:
        raise SettingsError(
            "daemon_port", settings.daemon_port, f"a port outside worker_ports {low}-{high}"
        )
    compat = settings.kdf_compat
    if (
        compat.enabled
        and compat.port is not None
        and (
            compat.port in (settings.daemon_port, settings.kdf_rpc_port, 22)
            or low <= compat.port <= high
        )
    ):
        raise SettingsError(
            "kdf_compat.port", compat.port, "a port other than the daemon, SSH and KDF RPC ports"
        )
    if settings.max_workers > high - low + 1:
        raise SettingsError(
            "max_workers",
            settings.max_workers,
            f"at most {high - low + 1} (the size of worker_ports)",
        )


def parse_settings(raw_config: Mapping[str, str]) -> Settings:
    """Validate the ``kdf-remote:`` keys (given without the namespace) into :class:`Settings`.

    Raises:
        SettingsError: the first problem found, naming the key, the value and the expectation.
    """
    for key in raw_config:
        if key not in KNOWN_KEYS:
            raise SettingsError(
                key, raw_config[key], f"a known key ({', '.join(sorted(KNOWN_KEYS))})"
            )
    raw: dict[str, object] = {k: _decode(k, v) for k, v in raw_config.items()}
    if "provider" not in raw:
        raise _missing("provider", "aws, do or custom")
    chosen = raw["provider"]
    if chosen not in _PROVIDERS:
        raise SettingsError("provider", chosen, "aws, do or custom")
    provider: Provider = chosen

    if "region" in raw:
        region = _region("region", raw["region"], provider)
    elif provider == "custom":
        region = "custom"
    else:
        raise _missing("region", f"the {provider} region of the primary server")

    if "allowed_ips" not in raw:
        raise _missing(
            "allowed_ips", 'the CIDRs allowed to reach the daemon (e.g. ["203.0.113.7/32"])'
        )
    allowed = _cidrs("allowed_ips", raw["allowed_ips"], world_ok=False, non_empty=True)
    ssh_allowed = (
        _cidrs("ssh_allowed_ips", raw["ssh_allowed_ips"], world_ok=False, non_empty=True)
        if "ssh_allowed_ips" in raw
        else allowed
    )

    custom = _custom_host(raw) if provider == "custom" else None
    if provider != "custom" and "custom_host" in raw:
        raise SettingsError(
            "custom_host", raw["custom_host"], "custom_host only with provider custom"
        )
    if provider == "custom" and "ssh_private_key" in raw:
        _str("ssh_private_key", raw["ssh_private_key"], "an OpenSSH or PEM private key")
    if provider != "custom" and "ssh_private_key" in raw:
        raise SettingsError(
            "ssh_private_key", "<set>", "no ssh_private_key: cloud servers get a Pulumi-made key"
        )

    ssh_keys = tuple(
        _match(
            f"ssh_public_keys[{i}]",
            k,
            re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+( [^\n]*)?$"),
            "an OpenSSH public key line",
        )
        for i, k in enumerate(_list("ssh_public_keys", raw.get("ssh_public_keys", [])))
    )
    dns = _dns(raw, provider)
    settings = Settings(
        provider=provider,
        region=region,
        allowed_ips=allowed,
        ssh_allowed_ips=ssh_allowed,
        kdf=_release(raw),
        package=_match(
            "package",
            raw.get("package", _default_package()),
            _PACKAGE,
            "kdf-remote[daemon]==VERSION, a .whl, or an absolute project path",
        ),
        size=_match("size", raw["size"], _WORD, "a server size such as t3.small or s-1vcpu-2gb")
        if "size" in raw
        else None,
        image=_match("image", raw["image"], _WORD, "an AMI id or a DigitalOcean image slug")
        if "image" in raw
        else None,
        ssh_user=_match("ssh_user", raw["ssh_user"], _USER, "a Unix user name")
        if "ssh_user" in raw
        else None,
        ssh_public_keys=ssh_keys,
        custom_host=custom,
        daemon_port=_port("daemon_port", raw.get("daemon_port", 8000)),
        log_level=_choice("log_level", raw.get("log_level", "info"), _LOG_LEVELS),
        kdf_rpc_port=_int("kdf_rpc_port", raw.get("kdf_rpc_port", 7783), 1024, 65535),
        netid=_netid(raw.get("netid", 8762)),
        p2p=_p2p(raw),
        worker_ports=_port_range("worker_ports", raw.get("worker_ports", "9000-9010")),
        max_workers=_int("max_workers", raw.get("max_workers", 10), 0, 1000),
        kdf_compat=_kdf_compat(raw),
        dns=dns,
        tls=_tls(raw, dns),
        fleet=_fleet(raw, provider),
        tags=_tags(raw),
        requirements=_requirements(raw),
        manage_firewall=_bool("manage_firewall", raw.get("manage_firewall", True)),
    )
    if provider == "custom" and settings.fleet:
        raise SettingsError(
            "fleet", raw["fleet"], "no fleet with provider custom (fleet workers are cloud servers)"
        )
    _check_ports(settings)
    return settings


def _choice(key: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise SettingsError(key, value, f"one of {', '.join(choices)}")
    return cast("str", value)


def _netid(value: object) -> int:
    netid = _int("netid", value, 0, MAX_NETID)
    if netid in DEPRECATED_NETIDS:
        raise SettingsError("netid", value, f"a netid other than the deprecated {netid}")
    return netid
