"""``kdf-remote-daemon init|keys|tls|audit``: commands the daemon's CLI attaches.

Attach them with :func:`kdf_remote.daemon.security.commands.register`, which imports this
module only when one of its commands runs.

Commands only parse, print and pick the exit code (0 ok, 1 failed, 2 usage); the work is done by
:mod:`~kdf_remote.daemon.security.install`, :mod:`~kdf_remote.daemon.security.keystore`,
:mod:`~kdf_remote.daemon.security.certs` and :mod:`~kdf_remote.daemon.security.audit`. A plain
API key is printed once, by ``init`` or ``keys add``, and never logged.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from cyclopts import App, Parameter

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.audit import verify_audit_log
from kdf_remote.daemon.security.certs import init_tls
from kdf_remote.daemon.security.commands import AUDIT_HELP, KEYS_HELP, TLS_HELP
from kdf_remote.daemon.security.errors import SecurityError
from kdf_remote.daemon.security.install import InitOptions, init_daemon
from kdf_remote.daemon.security.keystore import add_key, list_keys, revoke_key
from kdf_remote.daemon.security.tokens import create_jwt_key_file

__all__ = ["audit_app", "init_command", "keys_app", "tls_app"]

ConfigOpt = Annotated[Path, Parameter(name="--config", help="The daemon's YAML configuration.")]
JsonOpt = Annotated[bool, Parameter(name="--json", negative=(), help="Print JSON.")]
RoleName = Literal["viewer", "operator", "admin"]

keys_app = App(name="keys", help=KEYS_HELP)
tls_app = App(name="tls", help=TLS_HELP)
audit_app = App(name="audit", help=AUDIT_HELP)

_encoder = msgspec.json.Encoder()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1


def _print_json(value: object) -> None:
    _out(_encoder.encode(value).decode())


def _security(config: Path) -> tuple[Path, Path, Path]:
    """``(keys_file, jwt key_file, audit_log)`` of the configuration at ``config``."""
    from kdf_remote.daemon.settings import load_settings

    security = load_settings(config).security
    return security.keys_file, security.jwt.key_file, security.audit_log


def _settings_error() -> tuple[type[Exception], ...]:
    from kdf_remote.daemon.settings import SettingsError

    return (SettingsError, SecurityError, OSError)


def init_command(
    *,
    state_dir: Annotated[Path, Parameter(help="Where config, TLS files and state are written.")],
    kdf_binary: Annotated[Path, Parameter(help="The KDF executable to supervise.")],
    host: Annotated[str, Parameter(help="Address the daemon listens on.")] = "127.0.0.1",
    port: Annotated[int, Parameter(help="Port the daemon listens on (HTTPS).")] = 8000,
    san: Annotated[
        list[str] | None,
        Parameter(name="--san", help="Certificate name or address; repeat. Default: --host."),
    ] = None,
    allowed_ip: Annotated[
        list[str] | None,
        Parameter(name="--allowed-ip", help="A CIDR allowed to call; repeat. Default: any."),
    ] = None,
    max_workers: Annotated[int, Parameter(help="Worker instances (free ports are reserved).")] = 10,
    admin_name: Annotated[str, Parameter(help="Name of the admin API key.")] = "admin",
    json: JsonOpt = False,
) -> int:
    """Write daemon.yaml, TLS files, the JWT key and an admin API key (printed once)."""
    options = InitOptions(
        state_dir=state_dir,
        kdf_binary=kdf_binary,
        host=host,
        port=port,
        sans=tuple(san or ()),
        allowed_ips=tuple(allowed_ip or ()),
        max_workers=max_workers,
        admin_name=admin_name,
    )
    try:
        result = init_daemon(options)
    except (SecurityError, OSError) as exc:
        return _fail(str(exc))
    if json:
        _print_json(result)
        return 0
    _out(f"configuration  {result.config_path}")
    _out(f"url            {result.url}")
    _out(f"CA to pin      {result.ca_cert_path}")
    _out(f"start with     kdf-remote-daemon --config {result.config_path}")
    _out(f"admin API key {admin_name!r}, shown only this once:")
    _out(result.api_key)
    return 0


class _InitResult(msgspec.Struct, frozen=True):
    jwt_key_file: str
    created: bool


@keys_app.command(name="init")
def keys_init(*, config: ConfigOpt, json: JsonOpt = False) -> int:
    """Create the JWT signing key file (64 random bytes, 0600) if it does not exist."""
    try:
        _, jwt_key_file, _ = _security(config)
        created = create_jwt_key_file(jwt_key_file)
    except _settings_error() as exc:
        return _fail(str(exc))
    if json:
        _print_json(_InitResult(jwt_key_file=str(jwt_key_file), created=created))
    else:
        _out(f"{'created' if created else 'kept existing'} JWT key {jwt_key_file}")
    return 0


class _AddedKey(msgspec.Struct, frozen=True):
    name: str
    role: str
    key: str


@keys_app.command(name="add")
def keys_add(
    *,
    config: ConfigOpt,
    name: Annotated[str, Parameter(help="A unique name: it appears in the audit log.")],
    role: Annotated[RoleName, Parameter(help="viewer, operator or admin.")],
    expires: Annotated[
        str | None, Parameter(help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z.")
    ] = None,
    require_signing: Annotated[
        bool, Parameter(negative=(), help="Every request with this key must be signed.")
    ] = False,
    json: JsonOpt = False,
) -> int:
    """Create an API key; the plain key is printed once and never stored."""
    expires_at: datetime | None = None
    if expires is not None:
        try:
            expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            return _fail(f"--expires: got {expires!r}, expected an ISO 8601 time")
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
    try:
        keys_file, jwt_key_file, _ = _security(config)
        # The first key is created at install time: so is the JWT key the daemon needs.
        create_jwt_key_file(jwt_key_file)
        new = add_key(
            keys_file,
            name=name,
            role=Role.parse(role),
            expires_at=expires_at,
            require_signing=require_signing,
        )
    except _settings_error() as exc:
        return _fail(str(exc))
    if json:
        _print_json(_AddedKey(name=new.name, role=new.role, key=new.key))
    else:
        _out(f"API key {new.name!r} ({new.role}), shown only this once:")
        _out(new.key)
    return 0


class _KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: str
    key_id: str
    status: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    require_signing: bool


@keys_app.command(name="list")
def keys_list(*, config: ConfigOpt, json: JsonOpt = False) -> int:
    """List the keys of the keys file (names, roles, status; never a key)."""
    try:
        keys_file, _, _ = _security(config)
        stored = list_keys(keys_file)
    except _settings_error() as exc:
        return _fail(str(exc))
    now = datetime.now(UTC)
    infos = [
        _KeyInfo(
            name=k.name,
            role=k.role,
            key_id=k.key_id,
            status="revoked" if k.revoked_at else ("active" if k.active(now) else "expired"),
            created_at=k.created_at,
            expires_at=k.expires_at,
            revoked_at=k.revoked_at,
            require_signing=k.require_signing,
        )
        for k in stored
    ]
    if json:
        _print_json(infos)
        return 0
    if not infos:
        _out(f"no keys in {keys_file}")
    for info in infos:
        expiry = info.expires_at.isoformat() if info.expires_at else "never"
        signing = ", signed requests only" if info.require_signing else ""
        _out(
            f"{info.name:<24} {info.role:<8} {info.status:<8} id {info.key_id} "
            f"expires {expiry}{signing}"
        )
    return 0


class _Revoked(msgspec.Struct, frozen=True):
    name: str
    key_id: str
    revoked_at: datetime | None


@keys_app.command(name="revoke")
def keys_revoke(name: str, /, *, config: ConfigOpt, json: JsonOpt = False) -> int:
    """Revoke the key NAME; its requests and tokens are refused within a second."""
    try:
        keys_file, _, _ = _security(config)
        revoked = revoke_key(keys_file, name)
    except _settings_error() as exc:
        return _fail(str(exc))
    if json:
        _print_json(
            _Revoked(name=revoked.name, key_id=revoked.key_id, revoked_at=revoked.revoked_at)
        )
    else:
        _out(f"revoked {revoked.name!r} (id {revoked.key_id})")
    return 0


@tls_app.command(name="init")
def tls_init(
    *,
    directory: Annotated[Path, Parameter(name="--dir", help="Where to write the files.")],
    san: Annotated[
        list[str], Parameter(name="--san", help="A DNS name or IP address; repeat for more.")
    ],
    days: Annotated[int, Parameter(help="Server certificate lifetime.")] = 365,
    force: Annotated[
        bool, Parameter(negative=(), help="Replace the server certificate (keeps the CA).")
    ] = False,
    json: JsonOpt = False,
) -> int:
    """Write ca.pem, ca.key, server.pem, server.key (keys 0600); clients pin ca.pem."""
    try:
        files = init_tls(directory, san, days=days, force=force)
    except (SecurityError, OSError) as exc:
        return _fail(str(exc))
    if json:
        _print_json(files)
    else:
        for path in (files.ca_cert, files.ca_key, files.server_cert, files.server_key):
            _out(path)
    return 0


@audit_app.command(name="verify")
def audit_verify(*, config: ConfigOpt, json: JsonOpt = False) -> int:
    """Check the audit log's hash chain; exit 1 at the first altered, removed or added line."""
    try:
        _, _, audit_log = _security(config)
        result = verify_audit_log(audit_log)
    except _settings_error() as exc:
        return _fail(str(exc))
    if json:
        _print_json(result)
    elif result.ok:
        _out(f"{audit_log}: {result.entries} entries, chain intact")
    else:
        _out(
            f"{audit_log}: line {result.first_bad_line}: {result.problem} "
            f"({result.entries} entries verified before it)"
        )
    return 0 if result.ok else 1
