"""The state of one simulated KDF node: config, identity, enabled coins, rate limiter, streams."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdf_remote.sim.config import CoinConf, SimConfig
from kdf_remote.sim.kdflog import KdfLog
from kdf_remote.sim.wallet import WalletIdentity

__all__ = ["LIMIT_FAILED_REQUEST", "EnabledCoin", "Node", "RateLimiter", "is_loopback"]

LIMIT_FAILED_REQUEST = 10


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ``::1`` and IPv4-mapped loopback, as Rust's ``is_loopback``."""
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    return ip.startswith("127.") or ip == "::1"


class RateLimiter:
    """Per-IP count of wrong userpasses; 10 bans the IP for the process lifetime."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}

    def is_banned(self, ip: str) -> bool:
        """True once ``ip`` reached the limit; nothing ever lifts a ban."""
        return self._failures.get(ip, 0) >= LIMIT_FAILED_REQUEST

    def record_failure(self, ip: str) -> int:
        """Count one wrong userpass from ``ip``; returns the attempts left (9 down to 0)."""
        count = self._failures.get(ip, 0) + 1
        self._failures[ip] = count
        return max(LIMIT_FAILED_REQUEST - count, 0)


@dataclass(frozen=True, slots=True)
class EnabledCoin:
    """A coin activated with ``enable`` or ``electrum``."""

    conf: CoinConf
    address: str


@dataclass(slots=True)
class Node:
    """Everything the RPC methods read or change; one per process."""

    config: SimConfig
    version: str
    datetime: str
    log: KdfLog
    db_root: Path
    identity: WalletIdentity | None
    peer_id: str
    limiter: RateLimiter = field(default_factory=RateLimiter)
    enabled: dict[str, EnabledCoin] = field(default_factory=dict)
    heartbeats: dict[int, float] = field(default_factory=dict)
    """Heartbeat interval (seconds) per SSE client id, from ``stream::heartbeat::enable``."""
    request_stop: Callable[[], None] = lambda: None
    """Set by the runtime: called by the ``stop`` RPC."""
    streams_changed: Callable[[], None] = lambda: None
    """Set by the runtime: wakes SSE connections after a streamer was enabled or disabled."""

    def coin_conf(self, ticker: str) -> CoinConf | None:
        """The coins-file entry for ``ticker``, if any."""
        for conf in self.config.coins:
            if conf.ticker == ticker:
                return conf
        return None
