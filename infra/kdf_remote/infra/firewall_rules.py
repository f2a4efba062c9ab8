"""The inbound rule set of a kdf-remote server, as data, and its ufw rendering.

Every provider's firewall (AWS security group, DigitalOcean firewall, ufw on an existing host) is
built from :func:`plan_firewall`, so the policy lives in one pure function:

* the daemon port and SSH open only to the configured CIDRs (SSH never to the world);
* the optional ``kdf_compat`` listener open to the daemon's CIDRs, only when enabled;
* KDF's P2P ports (derived from the netid) only when P2P is enabled;
* port 80 to the world only while Let's Encrypt must answer HTTP-01 challenges;
* KDF's RPC port and the worker RPC ports never.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Literal

from kdf_remote.infra.settings import Settings
from kdf_remote.kdf.ports import p2p_ports

__all__ = [
    "WORLD",
    "FirewallPolicyError",
    "FirewallRule",
    "check_plan",
    "plan_firewall",
    "render_ufw_commands",
    "render_ufw_removal",
]

WORLD = frozenset({"0.0.0.0/0", "::/0"})
SSH_PORT = 22
HTTP_PORT = 80


class FirewallPolicyError(ValueError):
    """A rule set breaks the policy; raised before any resource is created."""


@dataclass(frozen=True)
class FirewallRule:
    """Allow TCP ``port`` from each CIDR in ``sources``; ``purpose`` becomes the description."""

    purpose: Literal["daemon", "ssh", "kdf_compat", "p2p", "p2p_wss", "acme"]
    port: int
    sources: tuple[str, ...]
    protocol: Literal["tcp"] = "tcp"

    @property
    def description(self) -> str:
        """A human label that also survives in the cloud console."""
        return f"kdf-remote {self.purpose}"

    def ipv4_sources(self) -> tuple[str, ...]:
        """Sources that are IPv4 networks (AWS takes v4 and v6 in separate fields)."""
        return tuple(s for s in self.sources if ipaddress.ip_network(s).version == 4)

    def ipv6_sources(self) -> tuple[str, ...]:
        """Sources that are IPv6 networks."""
        return tuple(s for s in self.sources if ipaddress.ip_network(s).version == 6)


def plan_firewall(settings: Settings) -> tuple[FirewallRule, ...]:
    """The inbound rules a server of this stack needs, in a stable order."""
    rules = [
        FirewallRule("ssh", SSH_PORT, settings.ssh_allowed_ips),
        FirewallRule("daemon", settings.daemon_port, settings.allowed_ips),
    ]
    compat = settings.kdf_compat
    if compat.enabled and compat.port is not None:
        rules.append(FirewallRule("kdf_compat", compat.port, settings.allowed_ips))
    if settings.p2p.enabled:
        tcp, wss = p2p_ports(settings.netid)
        rules.append(FirewallRule("p2p", tcp, settings.p2p.allowed_ips))
        rules.append(FirewallRule("p2p_wss", wss, settings.p2p.allowed_ips))
    if settings.tls.mode == "letsencrypt":
        # HTTP-01 needs port 80 reachable by Let's Encrypt's validators, whose addresses are
        # not published; certbot only listens there during issuance and renewal.
        rules.append(FirewallRule("acme", HTTP_PORT, tuple(sorted(WORLD))))
    plan = tuple(rules)
    check_plan(plan, settings)
    return plan


def forbidden_ports(settings: Settings) -> frozenset[int]:
    """KDF RPC ports of the primary and of every worker slot: never reachable from outside."""
    low, high = settings.worker_ports
    return frozenset({settings.kdf_rpc_port, *range(low, high + 1)})


def check_plan(rules: tuple[FirewallRule, ...], settings: Settings) -> None:
    """Raise :class:`FirewallPolicyError` if ``rules`` open KDF's RPC or world-open SSH/daemon."""
    forbidden = forbidden_ports(settings)
    for rule in rules:
        if rule.port in forbidden:
            raise FirewallPolicyError(f"{rule.description}: port {rule.port} is a KDF RPC port")
        if rule.purpose in ("ssh", "daemon", "kdf_compat") and WORLD & set(rule.sources):
            raise FirewallPolicyError(f"{rule.description}: open to the whole internet")
        if not rule.sources:
            raise FirewallPolicyError(f"{rule.description}: no source CIDR")


def render_ufw_commands(rules: tuple[FirewallRule, ...]) -> str:
    """A shell snippet that makes ufw enforce ``rules`` on an existing host.

    ufw is installed first when missing. SSH rules are added before ufw is enabled so the
    connection running the snippet survives.
    Rules are tagged with a comment so :func:`render_ufw_removal` can take exactly them away.
    """
    lines = [
        "set -eu",
        "if ! command -v ufw >/dev/null 2>&1; then",
        "    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ufw >/dev/null",
        "fi",
        "ufw default deny incoming",
        "ufw default allow outgoing",
    ]
    ordered = sorted(rules, key=lambda r: r.purpose != "ssh")
    for rule in ordered:
        for source in rule.sources:
            lines.append(
                "ufw allow proto "
                + shlex.join([rule.protocol, "from", source, "to", "any", "port", str(rule.port)])
                + " comment "
                + shlex.quote(rule.description)
            )
    lines.append("ufw --force enable")
    return "\n".join(lines) + "\n"


def render_ufw_removal(rules: tuple[FirewallRule, ...]) -> str:
    """A shell snippet deleting the rules of :func:`render_ufw_commands` (ufw stays enabled).

    SSH rules stay: with ufw still denying by default, removing them would lock the operator out
    of a host that kdf-remote does not own.
    """
    lines = ["set -u"]
    for rule in (r for r in rules if r.purpose != "ssh"):
        for source in rule.sources:
            lines.append(
                "ufw delete allow proto "
                + shlex.join([rule.protocol, "from", source, "to", "any", "port", str(rule.port)])
                + " || true"
            )
    return "\n".join(lines) + "\n"
