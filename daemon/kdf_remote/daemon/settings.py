"""Typed daemon settings, loaded once from the YAML file of design.md.

The file is composed with PyYAML (not constructed) so every value keeps its line: a bad value or
an unknown key fails start-up with ``file:line: key: got 'value', expected ...``. All problems
in a file are reported together, so ``kdf-remote-daemon check-config`` shows them in one run.

Relative paths are resolved against the directory of the configuration file, as an operator
who keeps the daemon's files next to its configuration would expect.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import msgspec
import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.hosts import check_allowed_host
from kdf_remote.daemon.units import (
    DURATION_EXPECTED,
    SIZE_EXPECTED,
    PortRange,
    parse_duration,
    parse_port_range,
    parse_size,
)
from kdf_remote.kdf.release import ReleaseConfigError, parse_origin

__all__ = [
    "ApiKeyEntry",
    "BackupSection",
    "DaemonSection",
    "IPNetwork",
    "JwtSection",
    "KdfCompatSection",
    "KdfSection",
    "RateLimitSection",
    "ResourceLimitsSection",
    "SecuritySection",
    "Settings",
    "SettingsError",
    "SettingsIssue",
    "SigningSection",
    "SslSection",
    "WorkerSupportSection",
    "load_settings",
    "parse_settings",
]

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
"""Instance names: what the REST paths, directories and log files can all carry safely."""

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_KEY_HASH = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


# --------------------------------------------------------------------------------------------
# Errors


class SettingsIssue(msgspec.Struct, frozen=True, kw_only=True):
    """One problem in a configuration file."""

    key: str
    problem: str
    line: int | None = None
    source: str | None = None
    column: int = 0
    """Orders problems on one line; not shown."""

    def __str__(self) -> str:
        where = self.source or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.key}: {self.problem}"


class SettingsError(Exception):
    """The configuration cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[SettingsIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class _BadValueError(Exception):
    """Raised by a value parser: ``expected`` says what the value should have been."""

    def __init__(self, expected: str, *, node: Node | None = None, suffix: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.node = node
        """The offending node when it is nested inside the value being read."""
        self.suffix = suffix
        """Appended to the key, e.g. ``[2]`` for the third item of a list."""


# --------------------------------------------------------------------------------------------
# Settings objects


class DaemonSection(msgspec.Struct, frozen=True, kw_only=True):
    """``daemon:``: how the REST service itself runs."""

    port: int = 8000
    host: str = "0.0.0.0"
    log_level: str = "info"
    health_check_interval: float = 30.0
    """Seconds between health samples pushed to ``?watch=true`` streams."""
    state_dir: Path = Path("/var/lib/kdf-remote")
    """Stored configs (0600), instance state files, keys, audit log."""
    stop_instances_on_exit: bool = False
    """Stop KDF when the daemon exits; by default KDF keeps running and is re-adopted."""
    json_logs: bool = False


class ResourceLimitsSection(msgspec.Struct, frozen=True, kw_only=True):
    """``worker_support.resource_limits:`` (sizes in bytes)."""

    memory_per_worker: int = 512 * 1024**2
    cpu_per_worker: float = 1.0
    max_total_memory: int = 8 * 1024**3


class WorkerSupportSection(msgspec.Struct, frozen=True, kw_only=True):
    """``worker_support:``: extra KDF instances next to ``main``."""

    enabled: bool = True
    max_workers: int = 10
    worker_ports: PortRange = PortRange(9000, 9010)
    worker_metrics_enabled: bool = True
    resource_limits: ResourceLimitsSection = ResourceLimitsSection()


class KdfSection(msgspec.Struct, frozen=True, kw_only=True):
    """``kdf:``: the primary instance ``main`` and defaults shared by every instance."""

    binary_path: Path = Path("/usr/local/bin/kdf")
    data_dir: Path = Path("/var/lib/kdf")
    auto_restart: bool = True
    max_restart_attempts: int = 3
    rpc_port: int = 7783
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    log_max_size: int = 10 * 1024**2
    log_backups: int = 3
    bin_dir: Path | None = None
    """Release store for ``POST /v1/kdf/update``: instances then run ``<bin_dir>/current/kdf``
    and ``binary_path`` is adopted as the first release. None: updates are refused (409)."""
    release_origins: tuple[str, ...] = ()
    """Origins (``scheme://host[:port]``) release zips may be downloaded from."""
    update_order: str = "last"
    """``last``: workers restart first and ``main`` last; ``first``: ``main`` first."""
    run_as: str | None = None
    """The unprivileged account KDF runs as when the daemon runs as root (a manual install; the
    bootstrap's unit runs the daemon itself unprivileged, and KDF inherits its user). Unset:
    ``kdf`` if that account exists, else KDF inherits root with a warning. Set: the account must
    exist, or start-up is refused."""


class BackupSection(msgspec.Struct, frozen=True, kw_only=True):
    """``backup:``: snapshots of instance data directories."""

    dir: Path | None = None
    """Where archives live; default ``<daemon.state_dir>/backups``."""
    retention: int = 5
    """Backups kept per instance (the oldest beyond it are deleted)."""
    encrypt: bool = False
    """AES-256-GCM, key in ``<daemon.state_dir>/backup.key`` (0600, made on first use)."""


class ApiKeyEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One API key; only its SHA-256 digest is kept in memory."""

    name: str
    role: Role
    digest: bytes
    expires: datetime | None = None
    line: int | None = None
    plain: bool = False
    """The YAML held the key itself (hashed on load); the security layer warns about it."""


class SslSection(msgspec.Struct, frozen=True, kw_only=True):
    """``security.ssl:``: the daemon terminates TLS itself."""

    cert_path: Path
    key_path: Path


class JwtSection(msgspec.Struct, frozen=True, kw_only=True):
    """``security.jwt:``: short-lived tokens exchanged for API keys."""

    key_file: Path
    ttl: float = 600.0
    issuer: str = "kdf-remote"
    audience: str = "kdf-remote-daemon"


class RateLimitSection(msgspec.Struct, frozen=True, kw_only=True):
    """``security.rate_limit:``."""

    requests_per_minute: int = 600
    auth_per_minute: int = 10
    lockout_after: int = 5
    lockout: float = 900.0


class SigningSection(msgspec.Struct, frozen=True, kw_only=True):
    """``security.signing:``: request signatures for admin calls."""

    required_for_admin: bool = False
    window: float = 300.0


class SecuritySection(msgspec.Struct, frozen=True, kw_only=True):
    """``security:``: who may call the daemon, and the limits every caller lives under."""

    api_keys: tuple[ApiKeyEntry, ...]
    keys_file: Path
    allowed_ips: tuple[IPNetwork, ...] = ()
    """Empty means any peer may connect."""
    allowed_hosts: tuple[str, ...] = ()
    """Names the ``Host`` header must match (literally); empty means any."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    ssl: SslSection | None = None
    jwt: JwtSection
    rate_limit: RateLimitSection = RateLimitSection()
    signing: SigningSection = SigningSection()
    audit_log: Path
    max_body_size: int = 1024**2
    max_streams: int = 32
    max_stream_duration: float = 3600.0
    max_log_tail: int = 10000


class KdfCompatSection(msgspec.Struct, frozen=True, kw_only=True):
    """``kdf_compat:``: a second listener speaking KDF's own RPC protocol for SDK apps."""

    enabled: bool = False
    port: int | None = None
    instance: str = "main"
    deny_methods: tuple[str, ...] = ("stop",)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The whole daemon configuration."""

    daemon: DaemonSection
    worker_support: WorkerSupportSection
    kdf: KdfSection
    security: SecuritySection
    kdf_compat: KdfCompatSection
    backup: BackupSection = BackupSection()
    source: Path | None = None
    """The file these settings came from, when they came from one."""


# --------------------------------------------------------------------------------------------
# Reading composed YAML


@dataclass
class _Context:
    """State shared by every reader of one file."""

    source: str | None
    base_dir: Path
    issues: list[SettingsIssue] = field(default_factory=list)
    constructor: SafeConstructor = field(default_factory=SafeConstructor)

    def report(self, key: str, problem: str, node: Node | None) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        column = node.start_mark.column if node is not None else 0
        self.issues.append(
            SettingsIssue(key=key, problem=problem, line=line, source=self.source, column=column)
        )

    def scalar(self, node: Node) -> object:
        """The Python value of a scalar node, as ``yaml.safe_load`` would build it."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError) as exc:
            raise _BadValueError(f"a valid YAML scalar ({exc})") from None


def _shown(node: Node) -> str:
    """How a bad value is quoted in a message."""
    if isinstance(node, ScalarNode):
        return repr(node.value) if node.tag != "tag:yaml.org,2002:null" else "null"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a mapping"


Parser = Callable[["_Context", Node], T]


class _Section:
    """A YAML mapping read key by key; keys never read are reported as unknown."""

    def __init__(self, ctx: _Context, node: Node | None, path: str) -> None:
        self.ctx = ctx
        self.path = path
        self.node = node
        self.items: dict[str, tuple[Node, Node]] = {}
        self.read: set[str] = set()
        if node is None or _is_null(node):
            return
        if not isinstance(node, MappingNode):
            ctx.report(path or "<top level>", f"got {_shown(node)}, expected a mapping", node)
            return
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else str(key_node)
            if key in self.items:
                first = self.items[key][0].start_mark.line + 1
                ctx.report(self._key(key), f"duplicate key (first set on line {first})", key_node)
            self.items[key] = (key_node, value_node)

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def value_node(self, key: str) -> Node | None:
        """The node of ``key`` (marked as read), or None when absent."""
        self.read.add(key)
        item = self.items.get(key)
        return item[1] if item is not None else None

    def get(self, key: str, parse: Parser[T], default: T) -> T:
        """Parse ``key`` with ``parse``; report and fall back to ``default`` when bad or absent."""
        node = self.value_node(key)
        if node is None:
            return default
        try:
            return parse(self.ctx, node)
        except _BadValueError as bad:
            where = bad.node or node
            self.ctx.report(
                self._key(key) + bad.suffix, f"got {_shown(where)}, expected {bad.expected}", where
            )
            return default

    def line_of(self, key: str) -> Node | None:
        """The value node of ``key`` for error reporting, without marking it read."""
        item = self.items.get(key)
        return item[1] if item is not None else self.node

    def sub(self, key: str) -> _Section:
        """The nested mapping under ``key``."""
        return _Section(self.ctx, self.value_node(key), self._key(key))

    def finish(self) -> None:
        """Report every key present but never read."""
        known = sorted(self.read)
        for key, (key_node, _) in self.items.items():
            if key in self.read:
                continue
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            self.ctx.report(
                self._key(key),
                f"unknown key, expected one of: {', '.join(known)}{suggestion}",
                key_node,
            )


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


# --------------------------------------------------------------------------------------------
# Value parsers (each raises _BadValueError(expected))


def _bool(ctx: _Context, node: Node) -> bool:
    value = ctx.scalar(node) if isinstance(node, ScalarNode) else None
    if not isinstance(value, bool):
        raise _BadValueError("true or false")
    return value


def _int_between(low: int, high: int | None, expected: str) -> Parser[int]:
    def parse(ctx: _Context, node: Node) -> int:
        value = ctx.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise _BadValueError(expected)
        if value < low or (high is not None and value > high):
            raise _BadValueError(expected)
        return value

    return parse


_positive_int = _int_between(1, None, "a positive integer")
_non_negative_int = _int_between(0, None, "an integer >= 0")
_port = _int_between(1, 65535, "a TCP port (1-65535)")
_kdf_port = _int_between(1024, 65535, "a TCP port between 1024 and 65535 (KDF refuses lower)")


def _number_positive(ctx: _Context, node: Node) -> float:
    value = ctx.scalar(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _BadValueError("a positive number")
    return float(value)


def _text(ctx: _Context, node: Node) -> str:
    if not isinstance(node, ScalarNode) or _is_null(node):
        raise _BadValueError("a string")
    text = str(ctx.scalar(node)).strip()
    if not text:
        raise _BadValueError("a non-empty string")
    return text


def _duration(ctx: _Context, node: Node) -> float:
    value = ctx.scalar(node) if isinstance(node, ScalarNode) else None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _BadValueError(DURATION_EXPECTED)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _BadValueError(str(exc)) from None
    if seconds <= 0:
        raise _BadValueError(f"{DURATION_EXPECTED}, greater than zero")
    return seconds


def _size(ctx: _Context, node: Node) -> int:
    value = ctx.scalar(node) if isinstance(node, ScalarNode) else None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _BadValueError(SIZE_EXPECTED)
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise _BadValueError(str(exc)) from None
    if size <= 0:
        raise _BadValueError(f"{SIZE_EXPECTED}, greater than zero")
    return size


def _port_range(ctx: _Context, node: Node) -> PortRange:
    try:
        return parse_port_range(_text(ctx, node))
    except ValueError as exc:
        raise _BadValueError(str(exc)) from None


def _path(ctx: _Context, node: Node) -> Path:
    text = _text(ctx, node)
    path = Path(text).expanduser()
    return path if path.is_absolute() else ctx.base_dir / path


def _optional(parse: Parser[T]) -> Parser[T | None]:
    def parser(ctx: _Context, node: Node) -> T | None:
        return None if _is_null(node) else parse(ctx, node)

    return parser


def _choice(choices: Sequence[str]) -> Parser[str]:
    def parse(ctx: _Context, node: Node) -> str:
        text = _text(ctx, node).lower() if isinstance(node, ScalarNode) else ""
        if text not in choices:
            raise _BadValueError(f"one of {', '.join(choices)}")
        return text

    return parse


def _host(ctx: _Context, node: Node) -> str:
    text = _text(ctx, node)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise _BadValueError("an IP address or a host name, such as 0.0.0.0, :: or 127.0.0.1")
    return text


def _instance_name(ctx: _Context, node: Node) -> str:
    text = _text(ctx, node)
    if not INSTANCE_NAME.match(text):
        raise _BadValueError("an instance name: a lower-case letter, then up to 31 of a-z 0-9 _ -")
    return text


def _list_of(parse: Parser[T], expected: str) -> Parser[tuple[T, ...]]:
    def parser(ctx: _Context, node: Node) -> tuple[T, ...]:
        if _is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            raise _BadValueError(f"a list of {expected}")
        items: list[T] = []
        for index, item in enumerate(node.value):
            try:
                items.append(parse(ctx, item))
            except _BadValueError as bad:
                raise _BadValueError(bad.expected, node=item, suffix=f"[{index}]") from None
        return tuple(items)

    return parser


def _network(ctx: _Context, node: Node) -> IPNetwork:
    text = _text(ctx, node)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _BadValueError("a CIDR such as 203.0.113.0/24 or 2001:db8::/32") from None


def _host_name(ctx: _Context, node: Node) -> str:
    try:
        return check_allowed_host(_text(ctx, node))
    except ValueError as bad:
        raise _BadValueError(str(bad)) from None


def _method_name(ctx: _Context, node: Node) -> str:
    text = _text(ctx, node)
    if any(ch.isspace() for ch in text):
        raise _BadValueError("a KDF method name")
    return text


def _key_hash(ctx: _Context, node: Node) -> bytes:
    match = _KEY_HASH.match(_text(ctx, node))
    if match is None:
        raise _BadValueError("'sha256:' followed by 64 hex digits")
    return bytes.fromhex(match.group(1))


def _timestamp(ctx: _Context, node: Node) -> datetime:
    value = ctx.scalar(node) if isinstance(node, ScalarNode) else None
    expected = "an ISO 8601 time such as 2027-01-01T00:00:00Z"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _BadValueError(expected) from None
    if not isinstance(value, datetime):
        raise _BadValueError(expected)
    # A time without a zone is read as UTC: key expiries are instants, not local wall times.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Sections


def _read_daemon(sec: _Section) -> DaemonSection:
    d = DaemonSection()
    result = DaemonSection(
        port=sec.get("port", _port, d.port),
        host=sec.get("host", _host, d.host),
        log_level=sec.get("log_level", _choice(_LOG_LEVELS), d.log_level),
        health_check_interval=sec.get("health_check_interval", _duration, d.health_check_interval),
        state_dir=sec.get("state_dir", _path, d.state_dir),
        stop_instances_on_exit=sec.get("stop_instances_on_exit", _bool, d.stop_instances_on_exit),
        json_logs=sec.get("json_logs", _bool, d.json_logs),
    )
    sec.finish()
    return result


def _read_worker_support(sec: _Section) -> WorkerSupportSection:
    d = WorkerSupportSection()
    limits_sec = sec.sub("resource_limits")
    dl = d.resource_limits
    limits = ResourceLimitsSection(
        memory_per_worker=limits_sec.get("memory_per_worker", _size, dl.memory_per_worker),
        cpu_per_worker=limits_sec.get("cpu_per_worker", _number_positive, dl.cpu_per_worker),
        max_total_memory=limits_sec.get("max_total_memory", _size, dl.max_total_memory),
    )
    limits_sec.finish()
    if limits.memory_per_worker > limits.max_total_memory:
        sec.ctx.report(
            "worker_support.resource_limits.memory_per_worker",
            f"is larger than max_total_memory ({limits.memory_per_worker} > "
            f"{limits.max_total_memory} bytes)",
            limits_sec.line_of("memory_per_worker"),
        )
    result = WorkerSupportSection(
        enabled=sec.get("enabled", _bool, d.enabled),
        max_workers=sec.get("max_workers", _non_negative_int, d.max_workers),
        worker_ports=sec.get("worker_ports", _port_range, d.worker_ports),
        worker_metrics_enabled=sec.get("worker_metrics_enabled", _bool, d.worker_metrics_enabled),
        resource_limits=limits,
    )
    if result.enabled and result.max_workers > len(result.worker_ports):
        sec.ctx.report(
            "worker_support.max_workers",
            f"got {result.max_workers}, expected at most {len(result.worker_ports)}: "
            f"worker_ports {result.worker_ports} holds only {len(result.worker_ports)} ports",
            sec.line_of("max_workers"),
        )
    sec.finish()
    return result


def _read_kdf(sec: _Section) -> KdfSection:
    d = KdfSection()
    result = KdfSection(
        binary_path=sec.get("binary_path", _path, d.binary_path),
        data_dir=sec.get("data_dir", _path, d.data_dir),
        auto_restart=sec.get("auto_restart", _bool, d.auto_restart),
        max_restart_attempts=sec.get(
            "max_restart_attempts", _non_negative_int, d.max_restart_attempts
        ),
        rpc_port=sec.get("rpc_port", _kdf_port, d.rpc_port),
        start_timeout=sec.get("start_timeout", _duration, d.start_timeout),
        stop_timeout=sec.get("stop_timeout", _duration, d.stop_timeout),
        log_max_size=sec.get("log_max_size", _size, d.log_max_size),
        log_backups=sec.get("log_backups", _non_negative_int, d.log_backups),
        bin_dir=sec.get("bin_dir", _optional(_path), d.bin_dir),
        release_origins=sec.get(
            "release_origins", _list_of(_release_origin, "http(s) origins"), d.release_origins
        ),
        update_order=sec.get("update_order", _choice(("first", "last")), d.update_order),
    )
    sec.finish()
    return result


def _release_origin(ctx: _Context, node: Node) -> str:
    text = _text(ctx, node)
    try:
        return str(parse_origin(text, field_name="release_origins"))
    except ReleaseConfigError:
        raise _BadValueError(
            "an http(s) origin such as https://github.com (scheme://host[:port], no path)"
        ) from None


def _read_backup(sec: _Section) -> BackupSection:
    d = BackupSection()
    result = BackupSection(
        dir=sec.get("dir", _optional(_path), d.dir),
        retention=sec.get("retention", _positive_int, d.retention),
        encrypt=sec.get("encrypt", _bool, d.encrypt),
    )
    sec.finish()
    return result


def _read_api_keys(ctx: _Context, node: Node | None) -> tuple[ApiKeyEntry, ...]:
    if node is None or _is_null(node):
        return ()
    if not isinstance(node, SequenceNode):
        ctx.report("security.api_keys", f"got {_shown(node)}, expected a list of keys", node)
        return ()
    entries: list[ApiKeyEntry] = []
    for index, item in enumerate(node.value):
        entry = _read_api_key(ctx, item, index)
        if entry is None:
            continue
        clash = next((e for e in entries if e.name == entry.name or e.digest == entry.digest), None)
        if clash is not None:
            what = "name" if clash.name == entry.name else "key"
            ctx.report(
                f"security.api_keys[{index}]",
                f"repeats the {what} of the entry on line {clash.line}; every key needs its own",
                item,
            )
            continue
        entries.append(entry)
    return tuple(entries)


def _read_api_key(ctx: _Context, item: Node, index: int) -> ApiKeyEntry | None:
    key = f"security.api_keys[{index}]"
    line = item.start_mark.line + 1
    if isinstance(item, ScalarNode) and not _is_null(item):
        plain = str(ctx.scalar(item))
        if not plain.strip():
            ctx.report(key, "got '', expected a non-empty API key", item)
            return None
        # Plain keys predate roles (design.md's `api_keys: ["key1"]`): they keep full access.
        return ApiKeyEntry(
            name=f"key{index + 1}",
            role=Role.ADMIN,
            digest=hashlib.sha256(plain.encode()).digest(),
            line=line,
            plain=True,
        )
    if not isinstance(item, MappingNode):
        ctx.report(key, f"got {_shown(item)}, expected a key string or a mapping", item)
        return None
    sec = _Section(ctx, item, key)
    name = sec.get("name", _text, "")
    role_text = sec.get("role", _choice([r.label for r in Role]), Role.VIEWER.label)
    key_hash = sec.get("key_hash", _optional(_key_hash), None)
    plain_key = sec.get("key", _optional(_text), None)
    expires = sec.get("expires", _optional(_timestamp), None)
    sec.finish()
    if not name:
        ctx.report(f"{key}.name", "missing, expected a name for this key", item)
        return None
    if ("key_hash" in sec.items) == ("key" in sec.items):
        ctx.report(key, "expected exactly one of key_hash ('sha256:<64 hex>') or key", item)
        return None
    if key_hash is None and plain_key is None:
        return None  # the bad value was already reported
    if key_hash is not None:
        digest = key_hash
    else:
        assert plain_key is not None
        digest = hashlib.sha256(plain_key.encode()).digest()
    return ApiKeyEntry(
        name=name,
        role=Role.parse(role_text),
        digest=digest,
        expires=expires,
        line=line,
        plain=plain_key is not None,
    )


def _read_security(sec: _Section, state_dir: Path) -> SecuritySection:
    d_rate = RateLimitSection()
    d_sign = SigningSection()
    ctx = sec.ctx
    api_keys = _read_api_keys(ctx, sec.value_node("api_keys"))
    keys_file = sec.get("keys_file", _optional(_path), None) or state_dir / "api_keys.json"

    ssl_node = sec.value_node("ssl")
    ssl: SslSection | None = None
    if ssl_node is not None and not _is_null(ssl_node):
        ssl_sec = _Section(ctx, ssl_node, "security.ssl")
        paths: dict[str, Path | None] = {}
        for name in ("cert_path", "key_path"):
            if name not in ssl_sec.items:
                ctx.report(f"security.ssl.{name}", "missing, expected a file path", ssl_node)
            paths[name] = ssl_sec.get(name, _path, None)
        ssl_sec.finish()
        cert, key = paths["cert_path"], paths["key_path"]
        if cert is not None and key is not None:
            ssl = SslSection(cert_path=cert, key_path=key)

    jwt_sec = sec.sub("jwt")
    d_jwt = JwtSection(key_file=state_dir / "jwt.key")
    jwt = JwtSection(
        key_file=jwt_sec.get("key_file", _optional(_path), None) or d_jwt.key_file,
        ttl=jwt_sec.get("ttl", _duration, d_jwt.ttl),
        issuer=jwt_sec.get("issuer", _text, d_jwt.issuer),
        audience=jwt_sec.get("audience", _text, d_jwt.audience),
    )
    jwt_sec.finish()

    rate_sec = sec.sub("rate_limit")
    rate = RateLimitSection(
        requests_per_minute=rate_sec.get(
            "requests_per_minute", _positive_int, d_rate.requests_per_minute
        ),
        auth_per_minute=rate_sec.get("auth_per_minute", _positive_int, d_rate.auth_per_minute),
        lockout_after=rate_sec.get("lockout_after", _positive_int, d_rate.lockout_after),
        lockout=rate_sec.get("lockout", _duration, d_rate.lockout),
    )
    rate_sec.finish()

    sign_sec = sec.sub("signing")
    signing = SigningSection(
        required_for_admin=sign_sec.get("required_for_admin", _bool, d_sign.required_for_admin),
        window=sign_sec.get("window", _duration, d_sign.window),
    )
    sign_sec.finish()

    cidrs = _list_of(_network, "CIDRs")
    result = SecuritySection(
        api_keys=api_keys,
        keys_file=keys_file,
        allowed_ips=sec.get("allowed_ips", cidrs, ()),
        allowed_hosts=sec.get("allowed_hosts", _list_of(_host_name, "host names"), ()),
        trusted_proxies=sec.get("trusted_proxies", cidrs, ()),
        ssl=ssl,
        jwt=jwt,
        rate_limit=rate,
        signing=signing,
        audit_log=sec.get("audit_log", _optional(_path), None) or state_dir / "audit.log",
        max_body_size=sec.get("max_body_size", _size, 1024**2),
        max_streams=sec.get("max_streams", _positive_int, 32),
        max_stream_duration=sec.get("max_stream_duration", _duration, 3600.0),
        max_log_tail=sec.get("max_log_tail", _positive_int, 10000),
    )
    sec.finish()
    return result


def _read_kdf_compat(sec: _Section) -> KdfCompatSection:
    d = KdfCompatSection()
    result = KdfCompatSection(
        enabled=sec.get("enabled", _bool, d.enabled),
        port=sec.get("port", _optional(_port), d.port),
        instance=sec.get("instance", _instance_name, d.instance),
        deny_methods=sec.get(
            "deny_methods", _list_of(_method_name, "KDF method names"), d.deny_methods
        ),
    )
    if result.enabled and result.port is None:
        sec.ctx.report(
            "kdf_compat.port",
            "missing, expected the TCP port of the KDF-compatible listener",
            sec.line_of("port"),
        )
    sec.finish()
    return result


def _check_ports(ctx: _Context, top: _Section, settings: Settings) -> None:
    """Report ports that would collide at run time, naming the later key."""
    kdf_sec = top.items.get("kdf")
    compat_sec = top.items.get("kdf_compat")
    rpc_port = settings.kdf.rpc_port
    if rpc_port == settings.daemon.port:
        ctx.report(
            "kdf.rpc_port",
            f"got {rpc_port}, expected a port other than daemon.port ({settings.daemon.port})",
            kdf_sec[1] if kdf_sec else None,
        )
    if settings.worker_support.enabled and rpc_port in settings.worker_support.worker_ports:
        ctx.report(
            "kdf.rpc_port",
            f"got {rpc_port}, expected a port outside worker_support.worker_ports "
            f"({settings.worker_support.worker_ports})",
            kdf_sec[1] if kdf_sec else None,
        )
    compat = settings.kdf_compat
    if compat.enabled and compat.port is not None:
        taken = {settings.daemon.port: "daemon.port", rpc_port: "kdf.rpc_port"}
        if compat.port in taken:
            ctx.report(
                "kdf_compat.port",
                f"got {compat.port}, expected a port other than {taken[compat.port]}",
                compat_sec[1] if compat_sec else None,
            )


# --------------------------------------------------------------------------------------------
# Entry points


def parse_settings(
    text: str, *, source: str | None = None, base_dir: Path | None = None
) -> Settings:
    """Validate configuration text and return typed settings.

    Args:
        text: the YAML document.
        source: the file name used in messages.
        base_dir: where relative paths are resolved (defaults to the working directory).

    Raises:
        SettingsError: listing every problem, each with its key, value, expectation and line.
    """
    ctx = _Context(source=source, base_dir=base_dir or Path.cwd())
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SettingsError(
            [
                SettingsIssue(
                    key="<file>", problem=f"not valid YAML: {problem}", line=line, source=source
                )
            ]
        ) from None
    top = _Section(ctx, root, "")
    daemon = _read_daemon(top.sub("daemon"))
    settings = Settings(
        daemon=daemon,
        worker_support=_read_worker_support(top.sub("worker_support")),
        kdf=_read_kdf(top.sub("kdf")),
        security=_read_security(top.sub("security"), daemon.state_dir),
        kdf_compat=_read_kdf_compat(top.sub("kdf_compat")),
        backup=_read_backup(top.sub("backup")),
        source=Path(source) if source else None,
    )
    top.finish()
    _check_ports(ctx, top, settings)
    if ctx.issues:
        raise SettingsError(sorted(ctx.issues, key=lambda i: (i.line or 0, i.column)))
    return settings


def load_settings(path: Path) -> Settings:
    """Read and validate the configuration file at ``path``.

    Raises:
        SettingsError: the file cannot be read or holds bad values.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            [SettingsIssue(key="<file>", problem=f"cannot read: {exc}", source=str(path))]
        ) from None
    return parse_settings(text, source=str(path), base_dir=path.resolve().parent)
