"""Fixtures for the security package's unit tests: a fake clock, key material, a runtime.

Everything runs in-process: files live in ``tmp_path``, time is a :class:`FakeClock`, and the
Litestar app of ``test_middleware.py`` is driven through ``httpx.ASGITransport``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.audit import AuditLog
from kdf_remote.daemon.security.ipaccess import IPNetwork, ip_network
from kdf_remote.daemon.security.keystore import (
    KeyRecord,
    KeyStore,
    add_key,
    key_digest,
    key_id_for,
)
from kdf_remote.daemon.security.runtime import (
    DEFAULT_PUBLIC_ROUTES,
    RateLimits,
    SecurityPolicy,
    SecurityRuntime,
)
from kdf_remote.daemon.security.tokens import (
    RevokedTokens,
    TokenPolicy,
    TokenService,
    create_jwt_key_file,
    load_jwt_key,
)

START_WALL = 1_900_000_000.0
"""A fixed Unix time (2030) the fake wall clock starts at."""
CONFIG_ADMIN_KEY = "yaml-admin-key-0123456789"


@dataclass
class FakeClock:
    """Monotonic and wall time that only move when a test says so."""

    mono: float = 1000.0
    wall_time: float = START_WALL

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_time

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_time += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock."""
    return FakeClock()


@pytest.fixture
def jwt_key(tmp_path: Path) -> bytes:
    """A generated JWT key, read back through the same checks as the daemon."""
    path = tmp_path / "state" / "jwt.key"
    assert create_jwt_key_file(path)
    return load_jwt_key(path)


@dataclass
class Keys:
    """Plain keys created for a test, by name."""

    plain: dict[str, str] = field(default_factory=dict)


@dataclass
class RuntimeFactory:
    """Builds a :class:`SecurityRuntime` over ``tmp_path`` with test-friendly numbers."""

    tmp_path: Path
    clock: FakeClock
    jwt_key: bytes
    keys: Keys = field(default_factory=Keys)
    audit_logs: list[AuditLog] = field(default_factory=list)
    """Every audit log built, so tests can write out what is queued before reading the file."""

    @property
    def keys_file(self) -> Path:
        return self.tmp_path / "state" / "api_keys.json"

    @property
    def audit_path(self) -> Path:
        return self.tmp_path / "state" / "audit.log"

    def add(self, name: str, role: Role, *, require_signing: bool = False) -> str:
        new = add_key(self.keys_file, name=name, role=role, require_signing=require_signing)
        self.keys.plain[name] = new.key
        return new.key

    def __call__(
        self,
        *,
        allowed_ips: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
        trusted_proxies: Iterable[str] = (),
        limits: RateLimits | None = None,
        max_body_size: int = 4096,
        signing_required_for_admin: bool = False,
        ttl: float = 600.0,
        config_keys: Iterable[KeyRecord] | None = None,
        public_routes: frozenset[tuple[str, str]] = DEFAULT_PUBLIC_ROUTES,
    ) -> SecurityRuntime:
        clock = self.clock
        if config_keys is None:
            digest = key_digest(CONFIG_ADMIN_KEY)
            config_keys = [
                KeyRecord(
                    key_id=key_id_for(digest),
                    name="yaml-admin",
                    role=Role.ADMIN,
                    digest=digest,
                    source="config",
                )
            ]
        store = KeyStore(
            config_keys, self.keys_file, wall_clock=clock.wall, monotonic=clock.monotonic
        )
        tokens = TokenService(
            self.jwt_key,
            TokenPolicy(issuer="kdf-remote", audience="kdf-remote-daemon", ttl=ttl),
            RevokedTokens(self.tmp_path / "state" / "revoked_tokens.json", wall_clock=clock.wall),
            wall_clock=clock.wall,
        )
        audit = AuditLog(self.audit_path, wall_clock=clock.wall)
        self.audit_logs.append(audit)
        return SecurityRuntime(
            keys=store,
            tokens=tokens,
            audit=audit,
            policy=SecurityPolicy(
                public_routes=public_routes,
                max_body_size=max_body_size,
                signing_required_for_admin=signing_required_for_admin,
            ),
            limits=limits or RateLimits(),
            allowed_ips=_networks(allowed_ips),
            allowed_hosts=allowed_hosts,
            trusted_proxies=_networks(trusted_proxies),
            monotonic=clock.monotonic,
            wall_clock=clock.wall,
        )


def _networks(texts: Iterable[str]) -> list[IPNetwork]:
    return [ip_network(text) for text in texts]


@pytest.fixture
def make_runtime(tmp_path: Path, clock: FakeClock, jwt_key: bytes) -> RuntimeFactory:
    """A factory of runtimes sharing this test's files and clock."""
    return RuntimeFactory(tmp_path=tmp_path, clock=clock, jwt_key=jwt_key)
